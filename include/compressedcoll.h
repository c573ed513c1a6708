/*
 * libcompressedcoll: compressed allreduce for data-parallel training.
 *
 * The API mirrors NCCL's shapes so that switching is a rename:
 *   ncclGetUniqueId -> cc_get_unique_id, ncclCommInitRank -> cc_comm_init_rank,
 *   ncclAllReduce -> compressed_allreduce, ncclGroupStart -> cc_group_start, ...
 *
 * This header is C99 and is the only installed header.
 */
#ifndef COMPRESSEDCOLL_H_
#define COMPRESSEDCOLL_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define CC_API __attribute__((visibility("default")))
#else
#define CC_API
#endif

#define CC_VERSION_MAJOR 0
#define CC_VERSION_MINOR 1
#define CC_VERSION_PATCH 0
/* Same encoding as NCCL_VERSION_CODE: major * 10000 + minor * 100 + patch. */
#define CC_VERSION_CODE (CC_VERSION_MAJOR * 10000 + CC_VERSION_MINOR * 100 + CC_VERSION_PATCH)

typedef enum {
  CC_SUCCESS = 0,
  CC_INVALID_ARGUMENT = 1,
  CC_INVALID_USAGE = 2,
  CC_SYSTEM_ERROR = 3,
  CC_REMOTE_ERROR = 4,
  CC_TIMEOUT = 5,
  CC_UNSUPPORTED = 6,
  CC_CUDA_ERROR = 7,
  CC_INTERNAL_ERROR = 8,
  CC_IN_PROGRESS = 9
} cc_result_t;

/* Numbering follows ncclDataType_t. */
typedef enum {
  CC_INT8 = 0,
  CC_UINT8 = 1,
  CC_INT32 = 2,
  CC_UINT32 = 3,
  CC_INT64 = 4,
  CC_UINT64 = 5,
  CC_FLOAT16 = 6,
  CC_FLOAT32 = 7,
  CC_FLOAT64 = 8,
  CC_BFLOAT16 = 9
} cc_datatype_t;
#define CC_NUM_DATATYPES 10

/* Numbering follows ncclRedOp_t. SUM and AVG on float32/float16/bfloat16 are
 * compressed; every other (op, datatype) pair takes the exact path. */
typedef enum { CC_SUM = 0, CC_PROD = 1, CC_MAX = 2, CC_MIN = 3, CC_AVG = 4 } cc_red_op_t;
#define CC_NUM_OPS 5

typedef struct cc_comm* cc_comm_t;

#define CC_UNIQUE_ID_BYTES 128
typedef struct {
  char internal[CC_UNIQUE_ID_BYTES];
} cc_unique_id_t;

/*
 * Communicator configuration. Always start from CC_CONFIG_INITIALIZER: a config
 * whose size/magic/version were not set by it is refused. Every other field
 * starts "unset"; an unset field is filled from the environment (CC_CODEC,
 * CC_ALGO, CC_TRANSPORT, CC_SEED, CC_TIMEOUT_MS, CC_DEBUG, ...), then from the
 * built-in default.
 */
#define CC_CONFIG_MAGIC 0xC0C0C0F1u
/* 2: switch_addr added at the end; 3: compress_min_bytes after it. The
 * library still takes version 1 and 2 configs (those end before switch_addr
 * and before compress_min_bytes). */
#define CC_CONFIG_VERSION 3u
#define CC_CONFIG_UNSET_INT (-1)

typedef struct {
  size_t size;           /* sizeof(cc_config_t) of the caller's build */
  unsigned int magic;    /* CC_CONFIG_MAGIC */
  unsigned int version;  /* CC_CONFIG_VERSION */
  const char* codec;     /* a codec spec, e.g. "nat", "qsgd:s=16", "randk:ratio=0.1+nat",
                            "topk:ratio=0.01+nat" (grammar: name[:key=value,...][+name...],
                            docs/wire-format.md); NULL: CC_CODEC, else "nat" */
  const char* algo;      /* "ring" | "direct" | "tree" | "allgather" | "switch" | "auto"; NULL: CC_ALGO,
                            else "auto" (a cost model picks per call, docs/algorithms.md) */
  const char* transport; /* "tcp" | "ibverbs" | "local"; NULL: CC_TRANSPORT, else "tcp" */
  const char* socket_ifname; /* NULL: CC_SOCKET_IFNAME, else the interface reaching the root */
  const char* ib_device;     /* NULL: CC_IB_DEVICE, else the first ibverbs device */
  const char* debug;         /* "WARN" | "INFO" | "TRACE"; NULL: CC_DEBUG, else "WARN" */
  int has_seed;              /* 0: CC_SEED, else a random seed agreed at init */
  unsigned long long seed;   /* Philox key; used when has_seed != 0 */
  int timeout_ms;            /* CC_CONFIG_UNSET_INT: CC_TIMEOUT_MS, else 300000 */
  long long chunk_bytes;     /* wire bytes per pipelined message; CC_CONFIG_UNSET_INT: CC_CHUNK_BYTES, else 1 MiB (2 MiB for the ring on host memory) */
  const char* master_codec;  /* direct's owner codec C_M, a quantizer spec ("nat", "qsgd:s=64");
                                the switch's downlink ("nat", or "none": int32 sums);
                                NULL: CC_MASTER_CODEC, else the call's own codec */
  const char* switch_addr;   /* version 2: a cc_switchd's "host:port" for algorithm "switch"
                                (docs/switch-protocol.md); NULL: CC_SWITCH_ADDR, else none */
  long long compress_min_bytes; /* version 3: under algo "auto", calls of fewer bytes run exact
                                   and larger ones compressed; 0 compresses every call; every
                                   rank must set the same. CC_CONFIG_UNSET_INT:
                                   CC_COMPRESS_MIN_BYTES, else auto's cost model decides per call */
} cc_config_t;

#define CC_CONFIG_INITIALIZER                                                            \
  {                                                                                      \
    sizeof(cc_config_t), CC_CONFIG_MAGIC, CC_CONFIG_VERSION, NULL, NULL, NULL, NULL,     \
        NULL, NULL, 0, 0ull, CC_CONFIG_UNSET_INT, CC_CONFIG_UNSET_INT, NULL, NULL,       \
        CC_CONFIG_UNSET_INT                                                              \
  }

CC_API cc_result_t cc_get_version(int* version);
CC_API const char* cc_get_error_string(cc_result_t result);
/* The message of the last failed call made by the calling thread (comm may be
 * NULL). Never NULL; "" when this thread has seen no error. */
CC_API const char* cc_get_last_error(cc_comm_t comm);

/* Creates an id naming the bootstrap root and holding a random secret that
 * ranks must present to join. Without CC_COMM_ID this also starts the
 * rendezvous store in the calling process, which must stay alive until every
 * rank has finished cc_comm_init_rank. With CC_COMM_ID=host:port every rank
 * gets the same id and rank 0 serves the store at init; the secret then comes
 * from CC_COMM_SECRET, a token (16 characters or more) that every rank of the
 * job shares, and without it the call fails. */
CC_API cc_result_t cc_get_unique_id(cc_unique_id_t* id);
/* The id that CC_COMM_ID=address with CC_COMM_SECRET=secret gives ("host:port",
 * "IPv4:port" or "[IPv6]:port"; secret NULL: CC_COMM_SECRET), for callers that
 * hold the address themselves: every rank computes the same id from the same
 * text and token, and rank 0 serves the store at init. Nothing is started here. */
CC_API cc_result_t cc_get_unique_id_from_address(const char* address, const char* secret, cc_unique_id_t* id);
CC_API cc_result_t cc_comm_init_rank(cc_comm_t* comm, int nranks, cc_unique_id_t id, int rank,
                              const cc_config_t* config);

/* stream == NULL: host buffers; blocks until the result is in recvbuf.
 * sendbuf == recvbuf: in place. count == 0 succeeds without communicating. */
CC_API cc_result_t compressed_allreduce(const void* sendbuf, void* recvbuf, size_t count,
                                 cc_datatype_t datatype, cc_red_op_t op, cc_comm_t comm,
                                 void* stream);

/*
 * Error feedback (EF-SGD). A residual holds, per value, what this rank's
 * encodes have lost so far (float32, whatever the datatype). Passed to
 * compressed_allreduce_ex, the call reduces p = sendbuf + residual and leaves
 * p - C(p) in the residual, in the same pass as the encode. Create one per
 * tensor (or bucket) and keep it across training steps. A residual is zero
 * when created. Datatypes: float32, float16, bfloat16; ops: SUM and AVG.
 */
typedef struct cc_residual* cc_residual_t;
CC_API cc_result_t cc_residual_create(cc_residual_t* residual, size_t count, cc_datatype_t datatype);
CC_API cc_result_t cc_residual_destroy(cc_residual_t residual);
/* Copies the residual's count float32 values out (checkpointing, inspection)
 * or in (restoring); cc_residual_reset zeroes it. */
CC_API cc_result_t cc_residual_get(cc_residual_t residual, float* values);
CC_API cc_result_t cc_residual_set(cc_residual_t residual, const float* values);
CC_API cc_result_t cc_residual_reset(cc_residual_t residual);

/* compressed_allreduce with a per-call codec spec (NULL: the communicator's)
 * and an error-feedback residual (NULL: none). Every rank must pass the same
 * spec; a biased codec (topk, nat_det) without a residual is allowed and
 * logged once at INFO. A residual with an unbiased spec whose variance bound
 * omega (docs/wire-format.md, "Error feedback") is 1 or more on the values
 * under one norm is refused (CC_INVALID_ARGUMENT): the residuals would grow
 * every step until they overflow. */
CC_API cc_result_t compressed_allreduce_ex(const void* sendbuf, void* recvbuf, size_t count,
                                    cc_datatype_t datatype, cc_red_op_t op, cc_comm_t comm,
                                    void* stream, const char* spec, cc_residual_t residual);

/* Calls between cc_group_start and cc_group_end are queued and run by
 * cc_group_end (whose result is the first failure). Groups nest. Calls on
 * one communicator with the same datatype, op and spec are fused into one
 * collective over their concatenation (tensor fusion); for a spec with
 * scope=model that collective takes one norm or top-k selection over all of
 * them (the entire model), with scope=tensor one per call (layer-wise). */
CC_API cc_result_t cc_group_start(void);
CC_API cc_result_t cc_group_end(void);

CC_API cc_result_t cc_comm_count(cc_comm_t comm, int* nranks);
CC_API cc_result_t cc_comm_user_rank(cc_comm_t comm, int* rank);

/* Waits for outstanding work; the communicator accepts no more collectives. */
CC_API cc_result_t cc_comm_finalize(cc_comm_t comm);
/* Frees the communicator's resources. */
CC_API cc_result_t cc_comm_destroy(cc_comm_t comm);
/* Stops all work on the communicator, breaks its connections so that peers
 * fail instead of waiting, and frees it. Safe to call from another thread. */
CC_API cc_result_t cc_comm_abort(cc_comm_t comm);
/* CC_SUCCESS, or the error that broke the communicator. */
CC_API cc_result_t cc_comm_get_async_error(cc_comm_t comm, cc_result_t* async_error);

#ifdef __cplusplus
}
#endif

#endif /* COMPRESSEDCOLL_H_ */

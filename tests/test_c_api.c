/* The public header from C99: two ranks as POSIX threads call
 * compressed_allreduce; argument errors come back with messages. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compressedcoll.h"

#define COUNT 1000
#define NRANKS 2

static int failures = 0;

#define CHECK(cond, ...)                                   \
  do {                                                     \
    if (!(cond)) {                                         \
      fprintf(stderr, "FAILED %s:%d: ", __FILE__, __LINE__); \
      fprintf(stderr, __VA_ARGS__);                        \
      fprintf(stderr, "\n");                               \
      ++failures;                                          \
    }                                                      \
  } while (0)

struct rank_args {
  int rank;
  cc_unique_id_t id;
  const char* transport;
  float output[COUNT];
  cc_result_t result;
};

static void* run_rank(void* opaque) {
  struct rank_args* args = (struct rank_args*)opaque;
  cc_config_t config = CC_CONFIG_INITIALIZER;
  cc_comm_t comm = NULL;
  float input[COUNT];
  int i;
  config.codec = "nat";
  config.transport = args->transport;
  config.timeout_ms = 60000;
  for (i = 0; i < COUNT; ++i) input[i] = (float)(i % 13) * 0.25f + (float)args->rank;
  args->result = cc_comm_init_rank(&comm, NRANKS, args->id, args->rank, &config);
  if (args->result != CC_SUCCESS) {
    fprintf(stderr, "rank %d: %s\n", args->rank, cc_get_last_error(NULL));
    return NULL;
  }
  args->result = compressed_allreduce(input, args->output, COUNT, CC_FLOAT32, CC_SUM, comm, NULL);
  if (args->result != CC_SUCCESS) fprintf(stderr, "rank %d: %s\n", args->rank, cc_get_last_error(comm));
  cc_comm_destroy(comm);
  return NULL;
}

static void run_collective(const char* transport) {
  struct rank_args args[NRANKS];
  pthread_t threads[NRANKS];
  cc_unique_id_t id;
  int rank;
  CHECK(cc_get_unique_id(&id) == CC_SUCCESS, "cc_get_unique_id: %s", cc_get_last_error(NULL));
  for (rank = 0; rank < NRANKS; ++rank) {
    args[rank].rank = rank;
    args[rank].id = id;
    args[rank].transport = transport;
    pthread_create(&threads[rank], NULL, run_rank, &args[rank]);
  }
  for (rank = 0; rank < NRANKS; ++rank) pthread_join(threads[rank], NULL);
  for (rank = 0; rank < NRANKS; ++rank) {
    CHECK(args[rank].result == CC_SUCCESS, "%s rank %d failed", transport, rank);
  }
  CHECK(memcmp(args[0].output, args[1].output, sizeof(args[0].output)) == 0,
        "%s: ranks disagree", transport);
  /* 1.25 + 2.25 = 3.5, encoded twice on the ring: 2, 4 or 8 */
  CHECK(args[0].output[5] == 2.0f || args[0].output[5] == 4.0f || args[0].output[5] == 8.0f, "%s: output[5] = %g", transport,
        (double)args[0].output[5]);
}

int main(void) {
  int version = 0;
  float x[4] = {1, 2, 3, 4};
  cc_config_t uninitialized;
  cc_comm_t comm = NULL;
  cc_unique_id_t id;

  CHECK(cc_get_version(&version) == CC_SUCCESS && version == CC_VERSION_CODE, "version %d", version);
  CHECK(compressed_allreduce(x, x, 4, CC_FLOAT32, CC_SUM, NULL, NULL) == CC_INVALID_ARGUMENT,
        "NULL comm accepted");
  CHECK(strstr(cc_get_last_error(NULL), "CC_INVALID_ARGUMENT") != NULL, "message: %s",
        cc_get_last_error(NULL));
  CHECK(strstr(cc_get_last_error(NULL), "comm is NULL") != NULL, "message: %s", cc_get_last_error(NULL));

  memset(&uninitialized, 0, sizeof(uninitialized));
  CHECK(cc_get_unique_id(&id) == CC_SUCCESS, "cc_get_unique_id: %s", cc_get_last_error(NULL));
  CHECK(cc_comm_init_rank(&comm, 1, id, 0, &uninitialized) == CC_INVALID_ARGUMENT,
        "uninitialized config accepted");
  CHECK(strstr(cc_get_last_error(NULL), "CC_CONFIG_INITIALIZER") != NULL, "message: %s",
        cc_get_last_error(NULL));

  CHECK(cc_get_unique_id(&id) == CC_SUCCESS, "cc_get_unique_id: %s", cc_get_last_error(NULL));
  {
    cc_config_t config = CC_CONFIG_INITIALIZER;
    config.transport = "local";
    CHECK(cc_comm_init_rank(&comm, 1, id, 0, &config) == CC_SUCCESS, "init: %s", cc_get_last_error(NULL));
    CHECK(compressed_allreduce(x, x, 4, (cc_datatype_t)99, CC_SUM, comm, NULL) == CC_INVALID_ARGUMENT,
          "unknown datatype accepted");
    CHECK(compressed_allreduce(x, x, 4, CC_FLOAT32, (cc_red_op_t)99, comm, NULL) == CC_INVALID_ARGUMENT,
          "unknown op accepted");
    CHECK(compressed_allreduce(NULL, x, 4, CC_FLOAT32, CC_SUM, comm, NULL) == CC_INVALID_ARGUMENT,
          "NULL sendbuf accepted");
    CHECK(cc_comm_destroy(comm) == CC_SUCCESS, "destroy");
  }

  {
    /* The address form gives the id CC_COMM_ID with CC_COMM_SECRET would, on every call. */
    cc_unique_id_t a;
    cc_unique_id_t b;
    const char* secret = "0123456789abcdef0123";
    CHECK(cc_get_unique_id_from_address("127.0.0.1:29999", secret, &a) == CC_SUCCESS, "from address: %s",
          cc_get_last_error(NULL));
    CHECK(cc_get_unique_id_from_address("127.0.0.1:29999", secret, &b) == CC_SUCCESS, "from address: %s",
          cc_get_last_error(NULL));
    CHECK(memcmp(&a, &b, sizeof a) == 0, "the same address gave different ids");
    CHECK(cc_get_unique_id_from_address("127.0.0.1:29998", secret, &b) == CC_SUCCESS, "from address: %s",
          cc_get_last_error(NULL));
    CHECK(memcmp(&a, &b, sizeof a) != 0, "different addresses gave the same id");
    CHECK(cc_get_unique_id_from_address("127.0.0.1:29999", "another secret token", &b) == CC_SUCCESS,
          "from address: %s", cc_get_last_error(NULL));
    CHECK(memcmp(&a, &b, sizeof a) != 0, "different secrets gave the same id");
    CHECK(cc_get_unique_id_from_address("127.0.0.1", secret, &a) == CC_INVALID_ARGUMENT, "no port accepted");
    CHECK(strstr(cc_get_last_error(NULL), "'127.0.0.1' is malformed") != NULL, "message: %s",
          cc_get_last_error(NULL));
    CHECK(cc_get_unique_id_from_address("127.0.0.1:29999", "short", &a) == CC_INVALID_ARGUMENT,
          "a short secret accepted");
    CHECK(cc_get_unique_id_from_address(NULL, secret, &a) == CC_INVALID_ARGUMENT, "NULL address accepted");
  }

  run_collective("local");
  run_collective("tcp");

  printf("%d passed, %d failed\n", failures == 0 ? 1 : 0, failures == 0 ? 0 : 1);
  return failures == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

/* One rank of compressed_allreduce through the C API, for the Python tests'
 * bit-for-bit comparison: reads the input values from a file, reduces them in
 * place and writes the result.
 *   reference_allreduce NRANKS RANK HOST:PORT SEED CODEC ALGO DATATYPE OP COUNT IN OUT
 * (the secret comes from CC_COMM_SECRET)
 * DATATYPE and OP are the cc_datatype_t / cc_red_op_t numbers. */
#include <stdio.h>
#include <stdlib.h>

#include "compressedcoll.h"

static size_t element_bytes(int datatype) {
  switch (datatype) {
    case CC_INT8: case CC_UINT8: return 1;
    case CC_FLOAT16: case CC_BFLOAT16: return 2;
    case CC_INT32: case CC_UINT32: case CC_FLOAT32: return 4;
    default: return 8;
  }
}

int main(int argc, char** argv) {
  cc_unique_id_t id;
  cc_config_t config = CC_CONFIG_INITIALIZER;
  cc_comm_t comm;
  int nranks, rank, datatype, op;
  size_t count, bytes;
  void* values;
  FILE* file;
  if (argc != 12) {
    fprintf(stderr, "usage: %s NRANKS RANK HOST:PORT SEED CODEC ALGO DATATYPE OP COUNT IN OUT\n", argv[0]);
    return 2;
  }
  nranks = atoi(argv[1]);
  rank = atoi(argv[2]);
  config.has_seed = 1;
  config.seed = strtoull(argv[4], NULL, 0);
  config.codec = argv[5];
  config.algo = argv[6];
  datatype = atoi(argv[7]);
  op = atoi(argv[8]);
  count = (size_t)strtoull(argv[9], NULL, 0);
  bytes = count * element_bytes(datatype);
  values = malloc(bytes ? bytes : 1);
  file = fopen(argv[10], "rb");
  if (values == NULL || file == NULL || fread(values, 1, bytes, file) != bytes) {
    fprintf(stderr, "cannot read %zu bytes from %s\n", bytes, argv[10]);
    return 1;
  }
  fclose(file);
  if (cc_get_unique_id_from_address(argv[3], NULL, &id) != CC_SUCCESS ||
      cc_comm_init_rank(&comm, nranks, id, rank, &config) != CC_SUCCESS ||
      compressed_allreduce(values, values, count, (cc_datatype_t)datatype, (cc_red_op_t)op, comm, NULL) !=
          CC_SUCCESS) {
    fprintf(stderr, "rank %d: %s\n", rank, cc_get_last_error(NULL));
    return 1;
  }
  cc_comm_destroy(comm);
  file = fopen(argv[11], "wb");
  if (file == NULL || fwrite(values, 1, bytes, file) != bytes || fclose(file) != 0) {
    fprintf(stderr, "cannot write %s\n", argv[11]);
    return 1;
  }
  free(values);
  return 0;
}

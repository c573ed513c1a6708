#include <compressedcoll.h>
#include <stdio.h>

int main(void) {
  int version = 0;
  float x[3] = {1.0f, 2.0f, 3.0f};
  cc_unique_id_t id;
  cc_comm_t comm = NULL;
  cc_config_t config = CC_CONFIG_INITIALIZER;
  config.transport = "local";
  if (cc_get_version(&version) != CC_SUCCESS || version != CC_VERSION_CODE) return 1;
  if (cc_get_unique_id(&id) != CC_SUCCESS || cc_comm_init_rank(&comm, 1, id, 0, &config) != CC_SUCCESS) {
    fprintf(stderr, "%s\n", cc_get_last_error(NULL));
    return 1;
  }
  if (compressed_allreduce(x, x, 3, CC_FLOAT32, CC_SUM, comm, NULL) != CC_SUCCESS) return 1;
  cc_comm_destroy(comm);
  printf("consumer: version %d, sum of one rank %g %g %g\n", version, x[0], x[1], x[2]);
  return x[2] == 3.0f ? 0 : 1;
}

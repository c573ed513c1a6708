// compressedcoll._core: the binding of the public C API (compressedcoll.h).
//
// It stays thin on purpose: buffers arrive through DLPack or the buffer
// protocol and go to compressed_allreduce in place; every failure becomes the
// Python exception class the package registered for its cc_result_t, with the
// library's own message. Argument defaults, environment variables and the
// torch conveniences live in the Python modules above it.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <string>

#include "compressedcoll.h"

namespace nb = nanobind;

namespace {

constexpr int kNumResults = CC_IN_PROGRESS + 1;

// One exception class per cc_result_t, set by compressedcoll._errors at import.
// The references are kept for the life of the process (never released at
// interpreter shutdown, when releasing them is no longer safe).
PyObject* errorClasses[kNumResults] = {};

[[noreturn]] void raiseResult(cc_result_t result) {
  const char* message = cc_get_last_error(nullptr);
  if (message == nullptr || message[0] == '\0') message = cc_get_error_string(result);
  const int index = static_cast<int>(result);
  PyObject* type = (index > 0 && index < kNumResults && errorClasses[index] != nullptr)
                       ? errorClasses[index]
                       : PyExc_RuntimeError;
  PyErr_SetString(type, message);
  throw nb::python_error();
}

void check(cc_result_t result) {
  if (result != CC_SUCCESS) raiseResult(result);
}

void registerErrorClasses(nb::dict classes) {
  for (auto [key, value] : classes) {
    const int index = nb::cast<int>(key);
    if (index <= 0 || index >= kNumResults) {
      throw nb::value_error("_register_error_classes: result code out of range");
    }
    if (!PyType_Check(value.ptr()) ||
        !PyObject_IsSubclass(value.ptr(), PyExc_Exception)) {
      throw nb::type_error("_register_error_classes: values must be exception classes");
    }
    Py_XDECREF(errorClasses[index]);
    errorClasses[index] = value.inc_ref().ptr();
  }
}

// ------------------------------------------------------------------ buffers

const char* dtypeText(nb::dlpack::dtype dtype, char* scratch, size_t size) {
  static const char* const codes[] = {"int", "uint", "float", "opaque", "bfloat", "complex", "bool"};
  const char* code = dtype.code < sizeof(codes) / sizeof(codes[0]) ? codes[dtype.code] : "code";
  std::snprintf(scratch, size, "%s%d%s", code, static_cast<int>(dtype.bits), dtype.lanes != 1 ? "xN" : "");
  return scratch;
}

bool datatypeOf(nb::dlpack::dtype dtype, cc_datatype_t* out) {
  using Code = nb::dlpack::dtype_code;
  if (dtype.lanes != 1) return false;
  const auto code = static_cast<Code>(dtype.code);
  switch (dtype.bits) {
    case 8:
      if (code == Code::Int) return *out = CC_INT8, true;
      if (code == Code::UInt) return *out = CC_UINT8, true;
      return false;
    case 16:
      if (code == Code::Float) return *out = CC_FLOAT16, true;
      if (code == Code::Bfloat) return *out = CC_BFLOAT16, true;
      return false;
    case 32:
      if (code == Code::Float) return *out = CC_FLOAT32, true;
      if (code == Code::Int) return *out = CC_INT32, true;
      if (code == Code::UInt) return *out = CC_UINT32, true;
      return false;
    case 64:
      if (code == Code::Float) return *out = CC_FLOAT64, true;
      if (code == Code::Int) return *out = CC_INT64, true;
      if (code == Code::UInt) return *out = CC_UINT64, true;
      return false;
    default:
      return false;
  }
}

std::string typeName(nb::handle object) {
  return nb::cast<std::string>(nb::str(nb::handle(reinterpret_cast<PyObject*>(Py_TYPE(object.ptr())))
                                           .attr("__qualname__")));
}

// A buffer the library may read and write in place.
struct Buffer {
  void* data = nullptr;
  size_t count = 0;
  cc_datatype_t datatype = CC_FLOAT32;
  bool onDevice = false;
};

// `what` names the argument in messages ("buffer", "values").
Buffer bufferOf(nb::handle object, const char* what, bool needWritable) {
  nb::ndarray<> array;
  if (!nb::try_cast(object, array)) {
    nb::ndarray<nb::ro> readOnly;
    if (nb::try_cast(object, readOnly)) {
      if (needWritable) {
        throw nb::value_error((std::string(what) + " is read-only: the call writes its result in place "
                               "(pass a writable array, e.g. numpy's arr.copy())")
                                  .c_str());
      }
      array = nb::ndarray<>(readOnly);
    } else {
      throw nb::type_error((std::string(what) + " must be an array that exports DLPack or the buffer "
                            "protocol (a numpy array, a torch tensor, ...), not " + typeName(object))
                               .c_str());
    }
  }
  Buffer buffer;
  char scratch[32];
  if (!datatypeOf(array.dtype(), &buffer.datatype)) {
    throw nb::type_error((std::string(what) + " has element type " +
                          dtypeText(array.dtype(), scratch, sizeof scratch) +
                          "; supported: float32, float16, bfloat16 (compressed), float64, int8, uint8, int32, "
                          "uint32, int64, uint64 (exact)")
                             .c_str());
  }
  // C order with any stride on extent-1 axes: the values are one run.
  size_t count = 1;
  int64_t expected = 1;
  for (size_t i = array.ndim(); i-- > 0;) {
    const int64_t extent = static_cast<int64_t>(array.shape(i));
    if (extent != 1 && array.stride(i) != expected) {
      throw nb::value_error((std::string(what) + " is not contiguous (axis " + std::to_string(i) + " has stride " +
                             std::to_string(array.stride(i)) + " elements where " + std::to_string(expected) +
                             " was expected); pass a C-contiguous array, e.g. numpy's ascontiguousarray "
                             "or torch's .contiguous(), and copy the result back")
                                .c_str());
    }
    if (extent != 0 && static_cast<uint64_t>(extent) > std::numeric_limits<size_t>::max() / count) {
      throw nb::value_error((std::string(what) + " has more elements than size_t can count").c_str());
    }
    count *= static_cast<size_t>(extent);
    expected *= extent == 0 ? 1 : extent;
  }
  const int device = array.device_type();
  if (device == nb::device::cuda::value) {
    buffer.onDevice = true;
  } else if (device != nb::device::cpu::value && device != nb::device::cuda_host::value &&
             device != nb::device::cuda_managed::value) {
    throw nb::value_error((std::string(what) + " lives on DLPack device type " + std::to_string(device) +
                           "; supported: CPU memory, and CUDA memory in a build with CUDA")
                              .c_str());
  }
  buffer.data = array.data();
  buffer.count = count;
  return buffer;
}

// ---------------------------------------------------------------- residual

class Residual {
 public:
  Residual(size_t count, int datatype) : count_(count), datatype_(static_cast<cc_datatype_t>(datatype)) {
    check(cc_residual_create(&residual_, count, datatype_));
  }
  ~Residual() {
    if (residual_ != nullptr) cc_residual_destroy(residual_);
  }
  Residual(const Residual&) = delete;
  Residual& operator=(const Residual&) = delete;

  size_t count() const { return count_; }
  int datatype() const { return static_cast<int>(datatype_); }
  cc_residual_t handle() const { return residual_; }

  void copyTo(nb::handle out) {
    const Buffer buffer = float32Values(out, "out", true);
    check(cc_residual_get(residual_, static_cast<float*>(buffer.data)));
  }
  void copyFrom(nb::handle values) {
    const Buffer buffer = float32Values(values, "values", false);
    check(cc_residual_set(residual_, static_cast<const float*>(buffer.data)));
  }
  void reset() { check(cc_residual_reset(residual_)); }

 private:
  Buffer float32Values(nb::handle object, const char* what, bool needWritable) const {
    const Buffer buffer = bufferOf(object, what, needWritable);
    if (buffer.datatype != CC_FLOAT32 || buffer.count != count_ || buffer.onDevice) {
      throw nb::value_error((std::string(what) + " must hold " + std::to_string(count_) +
                             " float32 values in CPU memory (a residual is float32 whatever its datatype)")
                                .c_str());
    }
    return buffer;
  }

  cc_residual_t residual_ = nullptr;
  size_t count_;
  cc_datatype_t datatype_;
};

// ------------------------------------------------------------ communicator

class Comm {
 public:
  Comm(int nranks, nb::bytes uniqueId, int rank, std::optional<std::string> codec,
       std::optional<std::string> algo, std::optional<std::string> transport, std::optional<uint64_t> seed,
       std::optional<int> timeoutMs, std::optional<std::string> debug, std::optional<long long> chunkBytes,
       std::optional<std::string> socketIfname, std::optional<std::string> ibDevice,
       std::optional<std::string> masterCodec, std::optional<long long> compressMinBytes) {
    if (uniqueId.size() != CC_UNIQUE_ID_BYTES) {
      throw nb::value_error(("unique_id must be " + std::to_string(CC_UNIQUE_ID_BYTES) + " bytes (from "
                             "get_unique_id()), not " + std::to_string(uniqueId.size()))
                                .c_str());
    }
    cc_unique_id_t id;
    std::memcpy(id.internal, uniqueId.c_str(), CC_UNIQUE_ID_BYTES);
    cc_config_t config = CC_CONFIG_INITIALIZER;
    auto text = [](const std::optional<std::string>& value) { return value ? value->c_str() : nullptr; };
    config.codec = text(codec);
    config.algo = text(algo);
    config.transport = text(transport);
    config.socket_ifname = text(socketIfname);
    config.ib_device = text(ibDevice);
    config.debug = text(debug);
    config.master_codec = text(masterCodec);
    if (seed) {
      config.has_seed = 1;
      config.seed = *seed;
    }
    if (timeoutMs) config.timeout_ms = *timeoutMs;
    if (chunkBytes) config.chunk_bytes = *chunkBytes;
    if (compressMinBytes) config.compress_min_bytes = *compressMinBytes;
    cc_result_t result;
    {
      // Init waits for every rank; other Python threads (ranks as threads,
      // the launcher's) must run meanwhile.
      nb::gil_scoped_release release;
      result = cc_comm_init_rank(&comm_, nranks, id, rank, &config);
    }
    check(result);
  }

  ~Comm() {
    if (comm_ != nullptr) cc_comm_destroy(comm_);
  }
  Comm(const Comm&) = delete;
  Comm& operator=(const Comm&) = delete;

  int rank() {
    int rank = 0;
    check(cc_comm_user_rank(usable("rank"), &rank));
    return rank;
  }
  int size() {
    int nranks = 0;
    check(cc_comm_count(usable("size"), &nranks));
    return nranks;
  }
  bool closed() const { return comm_ == nullptr; }

  void allreduce(nb::handle bufferObject, int op, std::optional<std::string> spec, Residual* residual,
                 uintptr_t stream) {
    cc_comm_t comm = usable("allreduce");
    const Buffer buffer = bufferOf(bufferObject, "buffer", true);
    if (buffer.onDevice && stream == 0) {
      throw nb::value_error("buffer is in CUDA memory: pass the stream to enqueue on (torch tensors get "
                            "torch.cuda.current_stream() from compressedcoll.Comm.allreduce)");
    }
    if (!buffer.onDevice && stream != 0) {
      throw nb::value_error("stream is set but buffer is in host memory");
    }
    const char* specText = spec ? spec->c_str() : nullptr;
    cc_residual_t residualHandle = residual != nullptr ? residual->handle() : nullptr;
    cc_result_t result;
    callsInside_.fetch_add(1);
    {
      nb::gil_scoped_release release;
      result = compressed_allreduce_ex(buffer.data, buffer.data, buffer.count, buffer.datatype,
                                       static_cast<cc_red_op_t>(op), comm, reinterpret_cast<void*>(stream),
                                       specText, residualHandle);
    }
    callsInside_.fetch_sub(1);
    check(result);
  }

  void finalize() {
    cc_comm_t comm = usable("finalize");
    cc_result_t result;
    {
      nb::gil_scoped_release release;
      result = cc_comm_finalize(comm);
    }
    check(result);
  }

  // Frees the communicator; a no-op when already closed.
  void destroy() {
    if (comm_ == nullptr) return;
    if (callsInside_.load() > 0) {
      PyErr_SetString(errorClasses[CC_INVALID_USAGE] ? errorClasses[CC_INVALID_USAGE] : PyExc_RuntimeError,
                      "close: a collective is still running on this communicator in another thread "
                      "(use abort() to stop it)");
      throw nb::python_error();
    }
    cc_comm_t comm = comm_;
    comm_ = nullptr;
    check(cc_comm_destroy(comm));
  }

  // Safe while another thread is inside a collective: the library frees the
  // communicator when that call returns.
  void abort() {
    if (comm_ == nullptr) return;
    cc_comm_t comm = comm_;
    comm_ = nullptr;
    check(cc_comm_abort(comm));
  }

  int asyncError() {
    cc_result_t error = CC_SUCCESS;
    check(cc_comm_get_async_error(usable("async_error"), &error));
    return static_cast<int>(error);
  }

 private:
  cc_comm_t usable(const char* call) {
    if (comm_ == nullptr) {
      PyErr_Format(errorClasses[CC_INVALID_USAGE] ? errorClasses[CC_INVALID_USAGE] : PyExc_RuntimeError,
                   "%s: the communicator was closed or aborted", call);
      throw nb::python_error();
    }
    return comm_;
  }

  cc_comm_t comm_ = nullptr;
  std::atomic<int> callsInside_{0};
};

nb::bytes getUniqueId() {
  cc_unique_id_t id;
  check(cc_get_unique_id(&id));
  return nb::bytes(id.internal, CC_UNIQUE_ID_BYTES);
}

nb::bytes getUniqueIdFromAddress(const std::string& address, std::optional<std::string> secret) {
  cc_unique_id_t id;
  check(cc_get_unique_id_from_address(address.c_str(), secret ? secret->c_str() : nullptr, &id));
  return nb::bytes(id.internal, CC_UNIQUE_ID_BYTES);
}

void groupEnd() {
  cc_result_t result;
  {
    nb::gil_scoped_release release;
    result = cc_group_end();
  }
  check(result);
}

int libraryVersion() {
  int version = 0;
  check(cc_get_version(&version));
  return version;
}

}  // namespace

NB_MODULE(_core, m) {
  m.doc() = "Binding of the libcompressedcoll C API; use the compressedcoll package, not this module.";
  // A communicator still referenced at exit (by a daemon thread, a hook's state) is
  // expected, not a reference-counting bug worth a report on every run.
  nb::set_leak_warnings(false);
  m.attr("__version__") = CC_PYTHON_PACKAGE_VERSION;
  m.attr("UNIQUE_ID_BYTES") = CC_UNIQUE_ID_BYTES;
  m.attr("HAVE_CUDA") = CC_PYTHON_HAVE_CUDA != 0;

  m.def("_register_error_classes", &registerErrorClasses, nb::arg("classes"),
        "Sets the exception class raised for each cc_result_t code.");
  m.def("library_version", &libraryVersion, "cc_get_version(): major * 10000 + minor * 100 + patch.");
  m.def("error_string", [](int result) { return std::string(cc_get_error_string(static_cast<cc_result_t>(result))); },
        nb::arg("result"), "cc_get_error_string(result).");
  m.def("get_unique_id", &getUniqueId,
        "cc_get_unique_id(): 128 bytes naming a bootstrap store served by this process (or CC_COMM_ID's).");
  m.def("get_unique_id_from_address", &getUniqueIdFromAddress, nb::arg("address"), nb::arg("secret").none(),
        "cc_get_unique_id_from_address(): the id every rank computes from 'host:port' and the job's secret "
        "(None: CC_COMM_SECRET); rank 0 serves it.");
  m.def("group_start", []() { check(cc_group_start()); }, "cc_group_start().");
  m.def("group_end", &groupEnd, "cc_group_end(): runs the calls queued since the matching group_start.");

  nb::class_<Residual>(m, "Residual", "An error-feedback residual (cc_residual_t).")
      .def(nb::init<size_t, int>(), nb::arg("count"), nb::arg("datatype"))
      .def_prop_ro("count", &Residual::count)
      .def_prop_ro("datatype", &Residual::datatype)
      .def("copy_to", &Residual::copyTo, nb::arg("out"), "Copies the float32 values into `out`.")
      .def("copy_from", &Residual::copyFrom, nb::arg("values"), "Sets the values from float32 `values`.")
      .def("reset", &Residual::reset, "Zeroes the residual.");

  nb::class_<Comm>(m, "Comm", "A communicator (cc_comm_t).")
      .def(nb::init<int, nb::bytes, int, std::optional<std::string>, std::optional<std::string>,
                    std::optional<std::string>, std::optional<uint64_t>, std::optional<int>,
                    std::optional<std::string>, std::optional<long long>, std::optional<std::string>,
                    std::optional<std::string>, std::optional<std::string>, std::optional<long long>>(),
           nb::arg("nranks"), nb::arg("unique_id"), nb::arg("rank"), nb::arg("codec").none(),
           nb::arg("algo").none(), nb::arg("transport").none(), nb::arg("seed").none(),
           nb::arg("timeout_ms").none(), nb::arg("debug").none(), nb::arg("chunk_bytes").none(),
           nb::arg("socket_ifname").none(), nb::arg("ib_device").none(), nb::arg("master_codec").none(),
           nb::arg("compress_min_bytes").none())
      .def_prop_ro("rank", &Comm::rank)
      .def_prop_ro("size", &Comm::size)
      .def_prop_ro("closed", &Comm::closed)
      .def("allreduce", &Comm::allreduce, nb::arg("buffer"), nb::arg("op"), nb::arg("spec").none(),
           nb::arg("residual").none(), nb::arg("stream"),
           "compressed_allreduce_ex in place; the GIL is released while it runs.")
      .def("finalize", &Comm::finalize)
      .def("destroy", &Comm::destroy)
      .def("abort", &Comm::abort)
      .def("async_error", &Comm::asyncError);
}

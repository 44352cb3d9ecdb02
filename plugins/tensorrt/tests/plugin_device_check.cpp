// The TensorRT plugin on a GPU without TensorRT: drives the creator and plugin through IPluginV3 as
// TensorRT's builder and runtime do (create from the ONNX node's fields in the build phase,
// configurePlugin, serialize and re-create in the runtime phase, onShapeChange, attachToContext,
// getWorkspaceSize, enqueue on device buffers on a non-default stream), in float32 and float16,
// then runs two attached copies from two threads at once on their own streams and checks both
// give bit for bit the single-thread output. Built and run by scripts/gpu_check.py, which compares
// the outputs with the PyTorch reference op:
//
//   naf_tensorrt_device_check DIR
//     DIR/case.txt: "B Dq C H W h w K heads scale"; DIR/{query,key,value}.f32 (float32, NCHW),
//     DIR/{row_index,col_index}.i32. Writes DIR/out_float32.f32 and DIR/out_float16.f32 (the
//     float16 run's output widened to float32). Prints one line per check; exits 0 when all passed.
//
// Linked with the plugin's sources and a stub getPluginRegistry (the only libnvinfer symbol the
// plugin uses), so no TensorRT library is needed.
#include <NvInferRuntime.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <initializer_list>
#include <string>
#include <thread>
#include <vector>

#include "plugin_test_util.h"

extern "C" nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators);
extern "C" nvinfer1::IPluginRegistry* getPluginRegistry() noexcept { return nullptr; }

using namespace nvinfer1;
using naf_plugin_test::capability;
using naf_plugin_test::desc;

namespace {

std::atomic<int> gFailures{0};  // checks run from two threads

bool check(bool ok, const std::string& what) {
  std::printf("%s %s\n", ok ? "PASS" : "FAIL", what.c_str());
  if (!ok) ++gFailures;
  return ok;
}

bool cuda_ok(cudaError_t err, const char* what) {
  return check(err == cudaSuccess, std::string(what) + (err == cudaSuccess ? "" : std::string(": ") + cudaGetErrorString(err)));
}

template <typename T>
std::vector<T> read_file(const std::string& path, size_t count) {
  std::vector<T> data(count);
  std::ifstream in(path, std::ios::binary);
  in.read(reinterpret_cast<char*>(data.data()), static_cast<std::streamsize>(count * sizeof(T)));
  if (!in || static_cast<size_t>(in.gcount()) != count * sizeof(T)) {
    std::fprintf(stderr, "%s: expected %zu bytes\n", path.c_str(), count * sizeof(T));
    std::exit(2);
  }
  return data;
}

struct Case {
  int64_t B, Dq, C, H, W, h, w, K, heads;
  float scale;
};

// Device copies of the inputs in one storage type.
struct DeviceInputs {
  void* q = nullptr;
  void* k = nullptr;
  void* v = nullptr;
  int32_t* rows = nullptr;
  int32_t* cols = nullptr;
};

void* upload(const std::vector<float>& host, bool half) {
  void* device = nullptr;
  if (half) {
    std::vector<__half> h(host.size());
    for (size_t i = 0; i < host.size(); ++i) h[i] = __float2half_rn(host[i]);
    cudaMalloc(&device, h.size() * sizeof(__half));
    cudaMemcpy(device, h.data(), h.size() * sizeof(__half), cudaMemcpyHostToDevice);
  } else {
    cudaMalloc(&device, host.size() * sizeof(float));
    cudaMemcpy(device, host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice);
  }
  return device;
}

std::vector<float> download(const void* device, size_t count, bool half) {
  std::vector<float> out(count);
  if (half) {
    std::vector<__half> h(count);
    cudaMemcpy(h.data(), device, count * sizeof(__half), cudaMemcpyDeviceToHost);
    for (size_t i = 0; i < count; ++i) out[i] = __half2float(h[i]);
  } else {
    cudaMemcpy(out.data(), device, count * sizeof(float), cudaMemcpyDeviceToHost);
  }
  return out;
}

// One enqueue of `runtime` into a fresh output buffer on `stream`; the output as float32.
std::vector<float> run_once(IPluginV3OneRuntime* runtime, const PluginTensorDesc* in, const PluginTensorDesc* out,
                            const DeviceInputs& d, size_t out_count, bool half, cudaStream_t stream, size_t workspace,
                            const std::string& label) {
  void* output = nullptr;
  void* scratch = nullptr;
  cudaMalloc(&output, out_count * (half ? 2 : 4));
  // NaN everywhere, on the kernel's own stream (a non-blocking stream does not wait for the legacy
  // one): every element must be written.
  cudaMemsetAsync(output, 0xff, out_count * (half ? 2 : 4), stream);
  if (workspace) cudaMalloc(&scratch, workspace);
  const void* inputs[5] = {d.q, d.k, d.v, d.rows, d.cols};
  void* outputs[1] = {output};
  const int32_t rc = runtime->enqueue(in, out, inputs, outputs, scratch, stream);
  check(rc == 0, label + ": enqueue returned " + std::to_string(rc));
  cuda_ok(cudaStreamSynchronize(stream), (label + ": stream synchronize").c_str());
  std::vector<float> result = download(output, out_count, half);
  cudaFree(output);
  if (scratch) cudaFree(scratch);
  return result;
}

void write_file(const std::string& path, const std::vector<float>& data) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size() * sizeof(float)));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: naf_tensorrt_device_check DIR\n");
    return 2;
  }
  const std::string dir = argv[1];
  Case c{};
  {
    std::ifstream in(dir + "/case.txt");
    if (!(in >> c.B >> c.Dq >> c.C >> c.H >> c.W >> c.h >> c.w >> c.K >> c.heads >> c.scale)) {
      std::fprintf(stderr, "%s/case.txt: expected 'B Dq C H W h w K heads scale'\n", dir.c_str());
      return 2;
    }
  }
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("SKIP no CUDA device\n");
    return 3;
  }
  const std::vector<float> q = read_file<float>(dir + "/query.f32", c.B * c.Dq * c.H * c.W);
  const std::vector<float> k = read_file<float>(dir + "/key.f32", c.B * c.Dq * c.h * c.w);
  const std::vector<float> v = read_file<float>(dir + "/value.f32", c.B * c.C * c.h * c.w);
  const std::vector<int32_t> rows = read_file<int32_t>(dir + "/row_index.i32", c.H * c.K);
  const std::vector<int32_t> cols = read_file<int32_t>(dir + "/col_index.i32", c.W * c.K);
  const size_t out_count = static_cast<size_t>(c.B * c.C * c.H * c.W);

  int32_t nb = 0;
  IPluginCreatorInterface* const* creators = getCreators(nb);
  if (!check(nb == 1, "one creator")) return 1;
  auto* creator = static_cast<IPluginCreatorV3One*>(creators[0]);

  for (const bool half : {false, true}) {
    const std::string type = half ? "float16" : "float32";
    const DataType dt = half ? DataType::kHALF : DataType::kFLOAT;
    // Build phase: from the ONNX node's attributes.
    int32_t heads = static_cast<int32_t>(c.heads);
    float scale = c.scale;
    PluginField attrs[2] = {PluginField("num_heads", &heads, PluginFieldType::kINT32, 1),
                            PluginField("scale", &scale, PluginFieldType::kFLOAT32, 1)};
    PluginFieldCollection fc{2, attrs};
    IPluginV3* built = creator->createPlugin("naf_attention", &fc, TensorRTPhase::kBUILD);
    if (!check(built != nullptr, type + ": createPlugin (build phase)")) return 1;
    auto* build = capability<IPluginV3OneBuild>(built, PluginCapabilityType::kBUILD);
    DynamicPluginTensorDesc cin[5]{}, cout[1]{};
    cin[0].desc = desc({-1, c.Dq, c.H, c.W}, dt);
    cin[1].desc = desc({-1, c.Dq, c.h, c.w}, dt);
    cin[2].desc = desc({-1, c.C, c.h, c.w}, dt);
    cin[3].desc = desc({c.H, c.K}, DataType::kINT32);
    cin[4].desc = desc({c.W, c.K}, DataType::kINT32);
    cout[0].desc = desc({-1, c.C, c.H, c.W}, dt);
    check(build->configurePlugin(cin, 5, cout, 1) == 0, type + ": configurePlugin");
    const size_t workspace = build->getWorkspaceSize(cin, 5, cout, 1);

    // Runtime phase: re-created from the serialized fields, as deserialising an engine does.
    auto* built_runtime = capability<IPluginV3OneRuntime>(built, PluginCapabilityType::kRUNTIME);
    IPluginV3* plugin = creator->createPlugin("naf_attention", built_runtime->getFieldsToSerialize(),
                                              TensorRTPhase::kRUNTIME);
    delete built;
    if (!check(plugin != nullptr, type + ": createPlugin (runtime phase)")) return 1;
    auto* runtime = capability<IPluginV3OneRuntime>(plugin, PluginCapabilityType::kRUNTIME);
    PluginTensorDesc in[5] = {desc({c.B, c.Dq, c.H, c.W}, dt), desc({c.B, c.Dq, c.h, c.w}, dt),
                              desc({c.B, c.C, c.h, c.w}, dt), desc({c.H, c.K}, DataType::kINT32),
                              desc({c.W, c.K}, DataType::kINT32)};
    PluginTensorDesc out[1] = {desc({c.B, c.C, c.H, c.W}, dt)};
    check(runtime->onShapeChange(in, 5, out, 1) == 0, type + ": onShapeChange");

    DeviceInputs d;
    d.q = upload(q, half);
    d.k = upload(k, half);
    d.v = upload(v, half);
    cudaMalloc(reinterpret_cast<void**>(&d.rows), rows.size() * 4);
    cudaMalloc(reinterpret_cast<void**>(&d.cols), cols.size() * 4);
    cudaMemcpy(d.rows, rows.data(), rows.size() * 4, cudaMemcpyHostToDevice);
    cudaMemcpy(d.cols, cols.data(), cols.size() * 4, cudaMemcpyHostToDevice);
    cuda_ok(cudaDeviceSynchronize(), (type + ": uploads").c_str());  // pageable copies may still be in flight

    cudaStream_t stream = nullptr;
    cuda_ok(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), (type + ": stream").c_str());
    const std::vector<float> single = run_once(runtime, in, out, d, out_count, half, stream, workspace, type);
    write_file(dir + "/out_" + type + ".f32", single);

    // Two execution contexts' copies (attachToContext clones), enqueued from two threads at once.
    IPluginV3* copies[2] = {runtime->attachToContext(nullptr), runtime->attachToContext(nullptr)};
    check(copies[0] != nullptr && copies[1] != nullptr, type + ": attachToContext");
    std::vector<float> results[2];
    std::thread threads[2];
    for (int t = 0; t < 2; ++t) {
      threads[t] = std::thread([&, t] {
        auto* copy = capability<IPluginV3OneRuntime>(copies[t], PluginCapabilityType::kRUNTIME);
        cudaStream_t own = nullptr;
        cudaStreamCreateWithFlags(&own, cudaStreamNonBlocking);
        copy->onShapeChange(in, 5, out, 1);
        results[t] = run_once(copy, in, out, d, out_count, half, own, workspace,
                              type + ": thread " + std::to_string(t));
        cudaStreamDestroy(own);
      });
    }
    for (auto& thread : threads) thread.join();
    for (int t = 0; t < 2; ++t) {
      check(results[t].size() == single.size() &&
                std::memcmp(results[t].data(), single.data(), single.size() * sizeof(float)) == 0,
            type + ": thread " + std::to_string(t) + " bit-identical to the single run");
      delete copies[t];
    }
    cudaStreamDestroy(stream);
    for (void* p : {d.q, d.k, d.v, static_cast<void*>(d.rows), static_cast<void*>(d.cols)}) cudaFree(p);
    delete plugin;
  }
  const int failures = gFailures.load();
  std::printf(failures ? "%d check(s) failed\n" : "OK\n", failures);
  return failures ? 1 : 0;
}

// Host-side logic of the naf runtimes, tested without any runtime library (target
// naf_runtime_unit_tests, run by tests/test_runtimes.py, also under AddressSanitizer):
//  * naf::Upsampler's argument checks, through a fake backend: every bad input is a
//    naf::RuntimeError whose message starts with the argument's name;
//  * the TensorRT backend's host logic (runtimes/tensorrt/src/engine_plan.cc) on fake engine
//    descriptions and sidecars: binding checks, versions, plugin choice, option checks;
//  * artifact kinds, the JSON reader, float16 conversion, resize weights.
// Prints one line per failed check and "OK" when all pass; exit status 1 on any failure.
//
// usage: naf_runtime_unit_tests SCRATCH_DIR
//        naf_runtime_unit_tests --preprocess FRAME.u8 HEIGHT WIDTH OUT_H OUT_W rgb|bgr OUT.f32
//          (the frame preprocessing alone, raw files in and out: how tests/test_aarch64.py checks
//          the aarch64 build of it under qemu against PyTorch on x86)
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <cstring>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "artifact.h"
#include "engine_plan.h"
#include "naf/upsampler.h"
#include "preprocess.h"

namespace {

int failures = 0;

void expect(bool ok, const std::string& what) {
  if (!ok) {
    ++failures;
    std::printf("FAIL: %s\n", what.c_str());
  }
}

// `f` must raise a naf::RuntimeError whose message starts with `prefix` and contains `needle`.
void expect_error(const std::function<void()>& f, const std::string& prefix, const std::string& needle,
                  const std::string& what, naf::RuntimeError::Kind kind = naf::RuntimeError::Kind::kBadInput) {
  try {
    f();
  } catch (const naf::RuntimeError& e) {
    const std::string m = e.what();
    expect(m.rfind(prefix, 0) == 0, what + ": message does not start with '" + prefix + "': " + m);
    expect(m.find(needle) != std::string::npos, what + ": message lacks '" + needle + "': " + m);
    expect(e.kind() == kind, what + ": wrong error kind: " + m);
    return;
  } catch (const std::exception& e) {
    expect(false, what + ": raised a non-RuntimeError: " + e.what());
    return;
  }
  expect(false, what + ": no error raised");
}

void write_file(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << content;
}

// --- a fake backend: records what execute() receives --------------------------------------------
class FakeUpsampler : public naf::Upsampler {
 public:
  FakeUpsampler(const std::string& artifact, naf::Shape image, naf::Shape features, naf::Shape output,
                naf::UpsamplerOptions options = naf::UpsamplerOptions())
      : Upsampler(artifact, options) {
    set_model_shapes(image, features, output);
  }
  naf::Backend backend() const override { return naf::Backend::kOnnxRuntime; }
  std::string runtime_version() const override { return "fake"; }
  bool uses_plugin() const override { return false; }
  std::string plugin_path() const override { return ""; }
  void set_range(int64_t lo, int64_t hi) { set_batch_range(lo, hi); }

  int64_t last_batch = 0;
  std::vector<float> last_image, last_features;

 private:
  void execute(const Request& request) override {
    HostScratch scratch;
    const HostInputs in = host_inputs(request, scratch);
    last_batch = request.batch;
    const size_t image_count = static_cast<size_t>(request.batch * 3 * image_shape()[2] * image_shape()[3]);
    size_t features_count = static_cast<size_t>(request.batch);
    for (size_t i = 1; i < 4; ++i) features_count *= static_cast<size_t>(features_shape()[i]);
    last_image.assign(in.image, in.image + image_count);
    last_features.assign(in.features, in.features + features_count);
    const size_t out_count = output_size(request.batch);
    for (size_t i = 0; i < out_count; ++i) request.out[i] = 1.0f;
  }
};

void test_upsampler_checks(const std::string& artifact) {
  using naf::Shape;
  FakeUpsampler up(artifact, {1, 3, 16, 16}, {1, 8, 9, 9}, {1, 8, 20, 20});
  std::vector<float> image(3 * 16 * 16, 0.5f), features(8 * 9 * 9, 2.0f), out;
  const naf::FeaturesView fv{features.data(), {1, 8, 9, 9}, naf::ElementType::kFloat32};

  const Shape shape = up.run(naf::ImageView{image.data(), {1, 3, 16, 16}}, fv, out);
  expect(shape == Shape({1, 8, 20, 20}) && out.size() == 8 * 20 * 20 && out[0] == 1.0f, "valid float run");
  expect(up.last_features[0] == 2.0f && up.last_image[0] == 0.5f, "inputs passed through");

  expect_error([&] { up.run(naf::ImageView{image.data(), {1, 3, 16, 17}}, fv, out); }, "image:",
               "(B, 3, Hi, Wi) = (1, 3, 16, 16)", "image width");
  expect_error([&] { up.run(naf::ImageView{image.data(), {1, 3, 16}}, fv, out); }, "image:", "got (1, 3, 16)",
               "image rank");
  expect_error([&] { up.run(naf::ImageView{nullptr, {1, 3, 16, 16}}, fv, out); }, "image:", "null", "image null");
  expect_error([&] { up.run(naf::ImageView{image.data(), {2, 3, 16, 16}}, fv, out); }, "image:", "(1, 3, 16, 16)",
               "static batch");
  expect_error(
      [&] { up.run(naf::ImageView{image.data(), {1, 3, 16, 16}}, naf::FeaturesView{features.data(), {1, 9, 9, 9}}, out); },
      "features:", "(B, C, h, w) = (1, 8, 9, 9)", "features channels");
  expect_error(
      [&] { up.run(naf::ImageView{image.data(), {1, 3, 16, 16}}, naf::FeaturesView{nullptr, {1, 8, 9, 9}}, out); },
      "features:", "null", "features null");
  expect_error(
      [&] {
        up.run(naf::ImageView{image.data(), {1, 3, 16, 16}},
               naf::FeaturesView{features.data(), {1, 8, 9, 9}, static_cast<naf::ElementType>(7)}, out);
      },
      "features:", "kFloat32 or kFloat16", "features type");
  std::vector<float> small(10);
  expect_error([&] { up.run(naf::ImageView{image.data(), {1, 3, 16, 16}}, fv, small.data(), small.size()); }, "out:",
               "needs 3200", "out capacity");
  expect_error([&] { up.run(naf::ImageView{image.data(), {1, 3, 16, 16}}, fv, nullptr, 3200); }, "out:", "null",
               "out null");

  // Frames: any size, checked geometry; float16 features converted.
  std::vector<uint8_t> frame(40 * 30 * 3, 128);
  std::vector<uint16_t> half(8 * 9 * 9, 0x3c00);  // 1.0
  const naf::FeaturesView hv{half.data(), {1, 8, 9, 9}, naf::ElementType::kFloat16};
  up.run(naf::Frame{frame.data(), 30, 40, 0}, hv, out);
  expect(up.last_features.size() == half.size() && up.last_features[5] == 1.0f, "float16 features converted");
  const float expected = (128.0f / 255.0f - 0.485f) / 0.229f;
  expect(std::fabs(up.last_image[0] - expected) < 1e-6f, "constant frame normalised: " + std::to_string(up.last_image[0]));
  expect_error([&] { up.run(naf::Frame{nullptr, 30, 40, 0}, hv, out); }, "frame:", "null", "frame null");
  expect_error([&] { up.run(naf::Frame{frame.data(), 0, 40, 0}, hv, out); }, "frame:", "> 0", "frame height");
  expect_error([&] { up.run(naf::Frame{frame.data(), 30, 40, 100}, hv, out); }, "frame:", "row_stride 100",
               "frame stride");
  expect_error([&] { up.run(naf::Frame{frame.data(), 100000, 100000, 0}, hv, out); }, "frame:", "more than",
               "frame too large");

  // A dynamic batch with a range (a TensorRT profile): the range is enforced, batches must agree.
  FakeUpsampler dyn(artifact, {-1, 3, 16, 16}, {-1, 8, 9, 9}, {-1, 8, 20, 20});
  dyn.set_range(1, 2);
  std::vector<float> image3(3 * 3 * 16 * 16), features3(3 * 8 * 9 * 9), features2(2 * 8 * 9 * 9);
  dyn.run(naf::ImageView{image3.data(), {2, 3, 16, 16}}, naf::FeaturesView{features2.data(), {2, 8, 9, 9}}, out);
  expect(dyn.last_batch == 2 && out.size() == 2 * 8 * 20 * 20, "dynamic batch 2");
  expect_error(
      [&] {
        dyn.run(naf::ImageView{image3.data(), {3, 3, 16, 16}}, naf::FeaturesView{features3.data(), {3, 8, 9, 9}}, out);
      },
      "image:", "outside", "batch above the profile");
  expect_error(
      [&] {
        dyn.run(naf::ImageView{image3.data(), {2, 3, 16, 16}}, naf::FeaturesView{features3.data(), {1, 8, 9, 9}}, out);
      },
      "features:", "batch size 1 differs from the image's 2", "batch mismatch");

  // Model contracts refused at construction.
  expect_error([&] { FakeUpsampler bad(artifact, {1, 4, 16, 16}, {1, 8, 9, 9}, {1, 8, 20, 20}); }, "model:",
               "4 channels", "four image channels");
  expect_error([&] { FakeUpsampler bad(artifact, {1, 3, -1, 16}, {1, 8, 9, 9}, {1, 8, 20, 20}); }, "model:",
               "only the batch may be dynamic", "dynamic height");
  expect_error([&] { FakeUpsampler bad(artifact, {1, 3, 16}, {1, 8, 9, 9}, {1, 8, 20, 20}); }, "model:", "rank 3",
               "rank-3 image");
  expect_error([&] { FakeUpsampler bad(artifact + ".missing", {1, 3, 16, 16}, {1, 8, 9, 9}, {1, 8, 20, 20}); },
               "model:", "no such file", "missing artifact");
  naf::UpsamplerOptions negative;
  negative.threads = -1;
  expect_error([&] { FakeUpsampler bad(artifact, {1, 3, 16, 16}, {1, 8, 9, 9}, {1, 8, 20, 20}, negative); },
               "options:", "threads must be >= 0", "negative threads");
}

// --- TensorRT host logic ----------------------------------------------------------------------------
naf::trt::IoTensor tensor(const char* name, bool input, naf::trt::DType type, naf::Shape dims) {
  naf::trt::IoTensor t;
  t.name = name;
  t.input = input;
  t.type = type;
  t.type_name = type == naf::trt::DType::kOther ? "int8" : "float";
  t.dims = std::move(dims);
  return t;
}

void test_tensorrt_logic(const std::string& dir) {
  using naf::trt::DType;
  namespace trt = naf::trt;
  expect(trt::version_string(101401) == "10.14.1", "version_string");

  trt::EngineDescription good;
  good.tensors = {tensor("image", true, DType::kFloat32, {1, 3, 64, 64}),
                  tensor("features", true, DType::kFloat16, {1, 32, 9, 9}),
                  tensor("upsampled", false, DType::kFloat32, {1, 32, 36, 36})};
  good.num_profiles = 1;
  const trt::EnginePlan plan = trt::plan_engine(good, "e.engine");
  expect(plan.min_batch == 1 && plan.max_batch == 1 && plan.features_type == DType::kFloat16 &&
             plan.output_shape == naf::Shape({1, 32, 36, 36}),
         "static engine plan");

  trt::EngineDescription dynamic = good;
  dynamic.tensors[0].dims[0] = dynamic.tensors[1].dims[0] = dynamic.tensors[2].dims[0] = -1;
  dynamic.profile_min_batch = 1;
  dynamic.profile_max_batch = 8;
  const trt::EnginePlan dplan = trt::plan_engine(dynamic, "e.engine");
  expect(dplan.min_batch == 1 && dplan.max_batch == 8, "dynamic engine plan");
  trt::EngineDescription no_profile = dynamic;
  no_profile.profile_max_batch = 0;
  expect_error([&] { trt::plan_engine(no_profile, "e.engine"); }, "model:", "optimisation profile", "no profile");

  trt::EngineDescription missing = good;
  missing.tensors[2].name = "output";
  expect_error([&] { trt::plan_engine(missing, "e.engine"); }, "model:", "expected inputs ['image', 'features'] and output 'upsampled'",
               "wrong output name");
  trt::EngineDescription extra = good;
  extra.tensors.push_back(tensor("mask", true, DType::kFloat32, {1, 1, 64, 64}));
  expect_error([&] { trt::plan_engine(extra, "e.engine"); }, "model:", "'mask'", "extra input");
  trt::EngineDescription int8 = good;
  int8.tensors[0].type = DType::kOther;
  int8.tensors[0].type_name = "int8";
  expect_error([&] { trt::plan_engine(int8, "e.engine"); }, "model:", "int8", "int8 binding");
  trt::EngineDescription host = good;
  host.tensors[1].on_device = false;
  expect_error([&] { trt::plan_engine(host, "e.engine"); }, "model:", "host memory", "host tensor");
  trt::EngineDescription dyn_h = good;
  dyn_h.tensors[0].dims[2] = -1;
  expect_error([&] { trt::plan_engine(dyn_h, "e.engine"); }, "model:", "only the batch may be dynamic", "dynamic height");
  trt::EngineDescription rank3 = good;
  rank3.tensors[2].dims = {32, 36, 36};
  expect_error([&] { trt::plan_engine(rank3, "e.engine"); }, "model:", "rank 4", "rank-3 output");

  // Versions.
  trt::check_library_version(101401, 101401);
  trt::check_library_version(101401, 101500);  // a newer 10.x library runs code built for 10.14
  expect_error([] { trt::check_library_version(101401, 100300); }, "tensorrt:", "TensorRT 10.14.1 headers",
               "older library", naf::RuntimeError::Kind::kRuntimeUnavailable);
  expect_error([] { trt::check_library_version(101401, 110000); }, "tensorrt:", "TensorRT 11.0.0",
               "other major", naf::RuntimeError::Kind::kRuntimeUnavailable);

  // Sidecars.
  const std::string engine = dir + "/naf_fp16.engine";
  write_file(engine, "not really an engine");
  std::remove(trt::sidecar_path(engine).c_str());
  trt::Sidecar none = trt::read_sidecar(engine);
  expect(!none.present, "no sidecar");
  write_file(trt::sidecar_path(engine),
             "{\"tensorrt\": \"10.14.1.48\", \"precision\": \"fp16\", \"plugin\": \"/gone/libnaf_tensorrt.so\", "
             "\"inputs\": {\"image\": [1, 3, 64, 64]}, \"build_seconds\": 12.5, \"flags\": [\"FP16\"], \"device\": null}");
  const trt::Sidecar sidecar = trt::read_sidecar(engine);
  expect(sidecar.present && sidecar.tensorrt == "10.14.1.48" && sidecar.precision == "fp16" && sidecar.plugin_recorded &&
             sidecar.plugin == "/gone/libnaf_tensorrt.so",
         "sidecar fields");
  trt::check_engine_version(sidecar, 101401, engine);
  expect_error([&] { trt::check_engine_version(sidecar, 101300, engine); }, "model:",
               "was built with TensorRT 10.14.1.48 (its sidecar says so), this is TensorRT 10.13.0", "engine version");
  const std::string why = trt::deserialize_failure(engine, 101401, sidecar, false, "getPluginCreator could not find plugin CrossScaleNeighborhoodAttention");
  expect(why.rfind("model:", 0) == 0 && why.find("libnaf_tensorrt.so is not loaded") != std::string::npos,
         "deserialize failure names the plugin: " + why);
  const std::string why2 = trt::deserialize_failure(engine, 101500, sidecar, true, "");
  expect(why2.find("built with TensorRT 10.14.1.48, this is TensorRT 10.15.0") != std::string::npos,
         "deserialize failure names the versions: " + why2);
  write_file(trt::sidecar_path(engine), "{\"tensorrt\": ");
  expect_error([&] { trt::read_sidecar(engine); }, "model:", "sidecar", "corrupt sidecar");

  // Plugin choice.
  naf::UpsamplerOptions options;
  bool required = false;
  expect(trt::choose_plugin(options, sidecar, "/lib/libnaf_tensorrt.so", &required) == "/lib/libnaf_tensorrt.so" &&
             required,
         "recorded plugin gone: default library, required");
  trt::Sidecar free_sidecar;
  free_sidecar.present = free_sidecar.plugin_recorded = true;
  expect(trt::choose_plugin(options, free_sidecar, "/lib/libnaf_tensorrt.so", &required).empty() && !required,
         "plugin-free engine loads nothing");
  options.plugin_path = "/opt/libnaf_tensorrt.so";
  expect(trt::choose_plugin(options, trt::Sidecar(), "", &required) == "/opt/libnaf_tensorrt.so" && !required,
         "explicit plugin, no sidecar");
  expect(trt::choose_plugin(naf::UpsamplerOptions(), trt::Sidecar(), "", &required).empty() && !required,
         "nothing found, nothing known");

  // Options.
  naf::UpsamplerOptions device;
  trt::check_options(device, 1);
  device.tensorrt.device = 2;
  expect_error([&] { trt::check_options(device, 2); }, "options:", "tensorrt.device 2 does not exist", "device ordinal");
  expect_error([&] { trt::check_options(naf::UpsamplerOptions(), 0); }, "tensorrt:", "no CUDA device", "no GPU",
               naf::RuntimeError::Kind::kRuntimeUnavailable);
}

void test_artifacts(const std::string& dir) {
  using naf::Backend;
  expect(naf::backend_for_artifact("a/naf_fused.onnx") == Backend::kOnnxRuntime, "onnx backend");
  expect(naf::backend_for_artifact("naf.XML") == Backend::kOpenVino, "xml backend");
  expect(naf::backend_for_artifact("naf_fp16.engine") == Backend::kTensorRt, "engine backend");
  expect(naf::parse_backend("TRT") == Backend::kTensorRt && naf::parse_backend("ov") == Backend::kOpenVino, "parse backend");
  expect_error([] { naf::parse_backend("coreml"); }, "backend:", "unknown backend 'coreml'", "unknown backend");
  const std::string png = dir + "/photo.onnx";
  write_file(png, std::string("\x89PNG\r\n\x1a\n", 8) + "rest");
  expect_error([&] { naf::detail::check_artifact_kind(png, Backend::kOnnxRuntime); }, "model:", "is a PNG image",
               "png named .onnx");
  expect_error([&] { naf::backend_for_artifact(dir + "/weights.pt"); }, "model:", "cannot tell the backend",
               "unknown extension");
  const std::string xml = dir + "/naf.xml";
  write_file(xml, "<net><layers><layer type=\"CrossScaleNeighborhoodAttention\" version=\"naf_opset1\"/></layers></net>");
  expect_error([&] { naf::detail::check_artifact_kind(xml, Backend::kOnnxRuntime); }, "model:",
               "an OpenVINO IR, run by the openvino backend", "xml given to onnxruntime");
  expect_error([&] { naf::detail::check_artifact_kind(dir + "/naf.onnx", Backend::kTensorRt); }, "model:",
               "build a TensorRT engine", "onnx given to tensorrt");
  expect(naf::detail::ir_uses_naf_ops(xml), "IR with naf_opset1");
  const std::string not_plugin = dir + "/libnaf_onnxruntime.so";
  write_file(not_plugin, std::string("\x7f" "ELF", 4) + std::string(1, '\0') + "getCreators" + std::string(1, '\0'));
  expect_error([&] { naf::detail::check_plugin_file(not_plugin, "RegisterCustomOps", "libnaf_onnxruntime.so", "ONNX Runtime custom-op library"); },
               "plugin:", "is the TensorRT plugin library libnaf_tensorrt.so", "wrong plugin kind");
  expect_error([&] { naf::detail::check_plugin_file(dir + "/none.so", "RegisterCustomOps", "libnaf_onnxruntime.so", "x"); },
               "plugin:", "no such file", "missing plugin");

  naf::detail::JsonValue v;
  std::string error;
  expect(naf::detail::parse_json("{\"a\": [1, 2.5e3, true, null, \"\\u00e9\\n\"], \"b\": {}}", &v, &error) &&
             v.find("a")->array.size() == 5 && v.find("a")->array[1].number == 2500.0 &&
             v.find("a")->array[4].string == "\xc3\xa9\n",
         "json parse");
  expect(!naf::detail::parse_json(std::string(100, '[') + std::string(100, ']'), &v, &error) &&
             error.find("64 levels") != std::string::npos,
         "json nesting limit");
  for (const char* bad : {"", "{", "{\"a\" 1}", "[1,]", "\"abc", "tru", "{\"a\": 1} x", "-", "\"\\x\""}) {
    expect(!naf::detail::parse_json(bad, &v, &error), std::string("json rejects ") + bad);
  }
  expect(naf::detail::release_of("2026.4.1-22982-e213a147257-releases/2026/4") == "2026.4.1", "release_of openvino");
  expect(naf::detail::release_of("10.14.1.48") == "10.14.1", "release_of tensorrt");
}

void test_numerics() {
  // float16 -> float32 on every class of value.
  expect(naf::detail::half_to_float(0x3c00) == 1.0f && naf::detail::half_to_float(0xc000) == -2.0f, "half normal");
  expect(naf::detail::half_to_float(0x0001) == std::ldexp(1.0f, -24), "half smallest subnormal");
  expect(naf::detail::half_to_float(0x03ff) == std::ldexp(1023.0f, -24), "half largest subnormal");
  expect(naf::detail::half_to_float(0x7bff) == 65504.0f, "half max");
  expect(std::isinf(naf::detail::half_to_float(0xfc00)) && naf::detail::half_to_float(0xfc00) < 0, "half -inf");
  expect(std::isnan(naf::detail::half_to_float(0x7e01)), "half nan");
  const float negzero = naf::detail::half_to_float(0x8000);
  expect(negzero == 0.0f && std::signbit(negzero), "half -0");
  // Resize weights: each output's weights sum to 1 and stay inside the input.
  for (const auto& sizes : {std::make_pair(1080, 448), std::make_pair(100, 448), std::make_pair(64, 64),
                            std::make_pair(7, 3), std::make_pair(3, 7)}) {
    const naf::detail::AxisWeights w = naf::detail::antialias_bilinear_weights(sizes.first, sizes.second);
    bool ok = true;
    for (int64_t o = 0; o < w.out; ++o) {
      double sum = 0;
      for (int j = 0; j < w.count[static_cast<size_t>(o)]; ++j) sum += w.weights[static_cast<size_t>(o * w.taps + j)];
      ok = ok && std::fabs(sum - 1.0) < 1e-5 && w.start[static_cast<size_t>(o)] >= 0 &&
           w.start[static_cast<size_t>(o)] + w.count[static_cast<size_t>(o)] <= w.in && w.count[static_cast<size_t>(o)] <= w.taps;
    }
    expect(ok, "resize weights " + std::to_string(sizes.first) + " -> " + std::to_string(sizes.second));
  }
}

}  // namespace

int preprocess_file(char** argv) {
  std::ifstream in(argv[2], std::ios::binary);
  const std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const int64_t h = std::atoll(argv[3]), w = std::atoll(argv[4]), oh = std::atoll(argv[5]), ow = std::atoll(argv[6]);
  if (h <= 0 || w <= 0 || oh <= 0 || ow <= 0 || bytes.size() != static_cast<size_t>(h * w * 3)) {
    std::fprintf(stderr, "preprocess: bad sizes or frame file\n");
    return 2;
  }
  std::vector<float> out(static_cast<size_t>(3 * oh * ow)), tmp;
  naf::detail::preprocess_frame(reinterpret_cast<const uint8_t*>(bytes.data()), h, w, 3 * w,
                                std::string(argv[7]) == "bgr", oh, ow, out.data(), tmp);
  std::ofstream file(argv[8], std::ios::binary);
  file.write(reinterpret_cast<const char*>(out.data()), static_cast<std::streamsize>(out.size() * sizeof(float)));
  return file ? 0 : 1;
}

int main(int argc, char** argv) {
  if (argc == 9 && std::string(argv[1]) == "--preprocess") return preprocess_file(argv);
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s SCRATCH_DIR\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  const std::string artifact = dir + "/model.onnx";
  write_file(artifact, "x");
  test_upsampler_checks(artifact);
  test_tensorrt_logic(dir);
  test_artifacts(dir);
  test_numerics();
  if (failures) {
    std::printf("%d check(s) failed\n", failures);
    return 1;
  }
  std::printf("OK\n");
  return 0;
}

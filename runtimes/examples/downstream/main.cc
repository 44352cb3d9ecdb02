// The smallest robotics-style use of naf::Upsampler: one camera frame (raw uint8 RGB, any size)
// and the backbone's features (raw float32, the model's (1, C, h, w)) in; the upsampled features
// (raw float32 (1, C, H, W)) out. The upsampler and the output buffer are made once; a perception
// loop would call run() once per frame with the same `out`.
//
// usage: naf_downstream MODEL.onnx FRAME.rgb HEIGHT WIDTH FEATURES.f32 OUT.f32 [bgr]
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "naf/onnxruntime_upsampler.h"

namespace {

std::vector<char> read_file(const char* path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw naf::RuntimeError(std::string("cannot open ") + path);
  return std::vector<char>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 7 && argc != 8) {
    std::fprintf(stderr, "usage: %s MODEL.onnx FRAME.rgb HEIGHT WIDTH FEATURES.f32 OUT.f32 [bgr]\n", argv[0]);
    return 2;
  }
  try {
    naf::UpsamplerOptions options;
    options.threads = 2;
    if (argc == 8 && std::string(argv[7]) == "bgr") options.channel_order = naf::ChannelOrder::kBGR;
    naf::OrtUpsampler upsampler(argv[1], options);  // libnaf_onnxruntime.so: found next to the library
    naf::Upsampler& model = upsampler;                 // the backend-neutral interface from here on

    const std::vector<char> frame_bytes = read_file(argv[2]);
    naf::Frame frame;
    frame.data = reinterpret_cast<const uint8_t*>(frame_bytes.data());
    frame.height = std::atoll(argv[3]);
    frame.width = std::atoll(argv[4]);
    if (frame_bytes.size() != static_cast<size_t>(frame.height * frame.width * 3)) {
      throw naf::RuntimeError("frame: the file does not hold HEIGHT * WIDTH * 3 bytes");
    }
    const std::vector<char> feature_bytes = read_file(argv[5]);
    naf::Shape features_shape = model.features_shape();
    features_shape[0] = 1;
    std::vector<float> feature_values(feature_bytes.size() / sizeof(float));
    if (feature_values.size() != static_cast<size_t>(features_shape[1] * features_shape[2] * features_shape[3])) {
      throw naf::RuntimeError("features: the file does not hold C * h * w float32 values of the model");
    }
    std::copy(feature_bytes.begin(), feature_bytes.end(), reinterpret_cast<char*>(feature_values.data()));
    const naf::FeaturesView features{feature_values.data(), features_shape, naf::ElementType::kFloat32};

    std::vector<float> out;  // sized by the first run, reused by every later one
    const naf::Shape shape = model.run(frame, features, out);

    std::ofstream file(argv[6], std::ios::binary);
    file.write(reinterpret_cast<const char*>(out.data()), static_cast<std::streamsize>(out.size() * sizeof(float)));
    std::printf("%s %s: upsampled (%lld, %lld, %lld, %lld)\n", naf::backend_name(model.backend()),
                model.runtime_version().c_str(), static_cast<long long>(shape[0]), static_cast<long long>(shape[1]),
                static_cast<long long>(shape[2]), static_cast<long long>(shape[3]));
  } catch (const naf::RuntimeError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}

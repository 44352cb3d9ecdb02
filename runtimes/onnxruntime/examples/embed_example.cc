// Smallest embedding of naf::OrtUpsampler (the README's example, built as naf_ort_embed_example):
//   naf_ort_embed_example MODEL.onnx [libnaf_onnxruntime.so]
// Feeds a constant image and features of the model's sizes and prints the output shape and mean.
#include <cstdio>
#include <functional>
#include <numeric>
#include <vector>

#include "naf/ort_runtime.h"

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3) {
    std::fprintf(stderr, "usage: %s MODEL.onnx [libnaf_onnxruntime.so]\n", argv[0]);
    return 2;
  }
  try {
    naf::OrtUpsamplerOptions options;
    options.intra_op_threads = 2;
    options.lean_memory = true;
    const naf::OrtUpsampler upsampler(argv[1], argc == 3 ? argv[2] : "", options);

    // Sizes come from the model; a symbolic batch (-1) is chosen by the caller.
    std::vector<int64_t> image_shape = upsampler.image_shape(), features_shape = upsampler.features_shape();
    image_shape[0] = features_shape[0] = 1;
    const auto count = [](const std::vector<int64_t>& s) {
      return static_cast<size_t>(std::accumulate(s.begin(), s.end(), int64_t{1}, std::multiplies<int64_t>()));
    };
    const std::vector<float> image(count(image_shape), 0.5f), features(count(features_shape), 1.0f);

    std::vector<float> out;  // reused across frames: no reallocation once sized
    std::vector<int64_t> out_shape;
    upsampler.run(image.data(), image_shape, features.data(), features_shape, out, out_shape);
    const double mean = std::accumulate(out.begin(), out.end(), 0.0) / static_cast<double>(out.size());
    std::printf("upsampled (%lld, %lld, %lld, %lld), mean %.6f\n", static_cast<long long>(out_shape[0]),
                static_cast<long long>(out_shape[1]), static_cast<long long>(out_shape[2]),
                static_cast<long long>(out_shape[3]), mean);
  } catch (const naf::RuntimeError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}

// naf_openvino_run: load an exported NAF model (OpenVINO IR .xml/.bin, or the fused .onnx) with the
// naf-export OpenVINO extension from C++, run it once on raw float32 inputs and write the raw
// float32 output. The smallest embedding of the extension in a C++ application:
//
//   ov::Core core;
//   core.add_extension("libnaf_openvino.so");           // the operation + its ONNX mapping
//   auto compiled = core.compile_model("naf.xml", "CPU", ...);
//
// usage: naf_openvino_run EXTENSION MODEL IMAGE.f32 FEATURES.f32 OUTPUT.f32 [THREADS]
//   IMAGE.f32 / FEATURES.f32: little-endian float32, C order, of the model's (static) input shapes
//   image (B, 3, Hi, Wi) and features (B, C, h, w). Prints the output shape on success; on failure
//   prints the error and exits with status 1.
//
// Compiled with the same settings as naf_export.runners.openvino.OpenVinoRunner (latency hint,
// float32 inference precision), so both give bit-identical outputs.
#include <cstdlib>
#include <exception>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include <openvino/openvino.hpp>

namespace {

void read_input(ov::InferRequest& request, const ov::Output<const ov::Node>& input, const std::string& path) {
  const ov::PartialShape& pshape = input.get_partial_shape();
  if (pshape.is_dynamic()) {
    throw std::runtime_error("input '" + input.get_any_name() + "' has the dynamic shape " + pshape.to_string() +
                             "; this example feeds static shapes only");
  }
  ov::Tensor tensor(ov::element::f32, pshape.to_shape());
  std::ifstream file(path, std::ios::binary);
  if (!file) throw std::runtime_error("cannot open " + path);
  file.read(static_cast<char*>(tensor.data()), static_cast<std::streamsize>(tensor.get_byte_size()));
  if (file.gcount() != static_cast<std::streamsize>(tensor.get_byte_size()) || file.peek() != EOF) {
    throw std::runtime_error(path + ": expected exactly " + std::to_string(tensor.get_byte_size()) +
                             " bytes (float32 " + pshape.to_string() + ")");
  }
  request.set_tensor(input, tensor);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 6 || argc > 7) {
    std::cerr << "usage: " << argv[0] << " EXTENSION MODEL IMAGE.f32 FEATURES.f32 OUTPUT.f32 [THREADS]\n";
    return 2;
  }
  try {
    ov::Core core;
    core.add_extension(std::string(argv[1]));
    ov::AnyMap config{ov::hint::performance_mode(ov::hint::PerformanceMode::LATENCY),
                      ov::hint::inference_precision(ov::element::f32)};
    if (argc == 7) config.emplace(ov::inference_num_threads(std::atoi(argv[6])));
    ov::CompiledModel compiled = core.compile_model(std::string(argv[2]), "CPU", config);
    ov::InferRequest request = compiled.create_infer_request();
    for (const auto& input : compiled.inputs()) {
      const auto& names = input.get_names();
      if (names.count("image")) {
        read_input(request, input, argv[3]);
      } else if (names.count("features")) {
        read_input(request, input, argv[4]);
      } else {
        throw std::runtime_error("unexpected model input '" + input.get_any_name() + "' (expected image, features)");
      }
    }
    request.infer();
    const ov::Tensor output = request.get_output_tensor(0);
    if (output.get_element_type() != ov::element::f32) {
      throw std::runtime_error("expected a float32 output, got " + output.get_element_type().to_string());
    }
    std::ofstream file(argv[5], std::ios::binary);
    file.write(static_cast<const char*>(output.data()), static_cast<std::streamsize>(output.get_byte_size()));
    if (!file) throw std::runtime_error(std::string("cannot write ") + argv[5]);
    std::cout << "output " << output.get_shape().to_string() << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "naf_openvino_run: " << e.what() << "\n";
    return 1;
  }
}

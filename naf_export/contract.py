"""Names every artifact and runtime agree on (DESIGN.md section 2). Imports nothing heavy, so
runtimes can use it without loading torch."""

OPSET = 17
ATTENTION_DOMAIN = "naf"
ATTENTION_OP = "CrossScaleNeighborhoodAttention"
ATTENTION_VERSION = 1
#: Fused GroupNorm -> SiLU -> reflect pad, same domain; implemented by the ONNX Runtime plugin (CPU).
GROUP_NORM_SILU_OP = "GroupNormSiLU"
#: GroupNormSiLU between INT8 convolutions, 8-bit input and output, same domain and runtime.
QUANTIZED_GROUP_NORM_SILU_OP = "QGroupNormSiLU"
#: Axial RoPE of the queries, same domain and runtime.
AXIAL_ROPE_OP = "AxialRoPE"
INPUT_NAMES = ("image", "features")
OUTPUT_NAME = "upsampled"
#: Model metadata (ONNX metadata_props, OpenVINO rt_info naf_export/stages) naming the tensors of
#: NAF.stages(): a JSON object stage -> tensor name (``naf-export validate --stages``).
STAGES_KEY = "naf_export.stages"

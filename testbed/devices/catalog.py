"""What is known about each of the 18 measured devices: label, origin, confirmation, kind, energy, spread.

Labels follow ``data/SOURCE.md``: a device is *confirmed* where a source read there names the exact
hardware; *unconfirmed* where the label is recalled or ambiguous; *simulated* where the original
benchmark computed the latency with a simulator rather than measuring a board.

Energy numbers come from ``/work/shared/notes/energy-parameters.md`` (DeepEdgeBench power traces,
Baller et al., IEEE IC2E 2021, raw data in github.com/stephanballer/deepedgebench at commit
e1056efd; whole-board power at the supply, batch 1). Every other value is marked ``assumed``, with
the assumption stated: reports must print that word next to numbers derived from it.
"""

from __future__ import annotations

NN_METER = "nn-Meter (microsoft/nn-Meter), via Ren-Research/OneProxy"
HW_NAS_BENCH = "HW-NAS-Bench (RICE-EIC/GATECH-EIC), via Ren-Research/OneProxy"
BRP_NAS = "Eagle / BRP-NAS LatBench (zheng-ningxin/brp-nas), via Ren-Research/OneProxy"

_DEEPEDGEBENCH = ("DeepEdgeBench (Baller et al., IC2E 2021) raw power traces, "
                  "github.com/stephanballer/deepedgebench@e1056efd, derived in shared/notes/energy-parameters.md")


def _sourced(value: float, source: str) -> dict:
    return {"value": value, "source": source}


def _assumed(value: float, why: str) -> dict:
    return {"value": value, "source": "assumed", "assumption": why}


_PHONE_COMPUTE = _assumed(2.0, "smartphone SoC under CNN load; no Pixel 3 / Snapdragon 855 power figure was found "
                               "(energy-parameters.md section 3); 2.0 W is the testbed's previous default")
_PHONE_IDLE = _assumed(0.3, "smartphone idle with screen off; no source found")
_ACCEL_COMPUTE = _assumed(1.0, "mobile accelerator (DSP/NPU/VPU) active power; no source found")

# Run-to-run spread (coefficient of variation of one inference's time). The latency data holds one value
# per network, so it says nothing about spread. Two boards have per-inference timestamps in DeepEdgeBench's
# raw data (results/inference_classification/*/ts_*.txt at commit e1056efd): CV of inferences 2-40 of
# 5,000 (the first is a warm-up outlier), derived here by hand-transcribing the timestamps.
_DEEPEDGEBENCH_TS = "DeepEdgeBench raw per-inference timestamps (github.com/stephanballer/deepedgebench@e1056efd, "
_MEASURED_CV = {
    "raspberry_pi4": (0.0024, _DEEPEDGEBENCH_TS + "rpi/ts_rpi_tflite_mn2.txt): 193.5 +- 0.47 ms over "
                              "inferences 2-40, TFLite MobileNetV2"),
    "jetson_nano": (0.0046, _DEEPEDGEBENCH_TS + "jetson/ts_jetson_onnxtrt_mn2.txt): 23.73 +- 0.11 ms over "
                            "inferences 2-40, TensorRT MobileNetV2"),
}
# Everything else is assumed, per hardware class: dedicated boards and accelerators about as steady as the
# two measured boards; phone SoCs far less (DVFS, background load; no source found); simulators exact.
_ASSUMED_CV = {"cpu": 0.05, "gpu": 0.005, "accelerator": 0.005, "server": 0.005, "simulated": 0.0}
_PHONES = {"adreno630_gpu", "adreno640_gpu", "cortex_a76_cpu", "pixel3", "snapdragon855_cpu",
                  "snapdragon855_dsp", "snapdragon855_gpu"}

# name -> (label, data source, confirmed/unconfirmed/simulated, kind, hardware class, energy)
_DEVICES: dict[str, tuple[str, str, str, str, str, dict]] = {
    "adreno630_gpu": ("Qualcomm Adreno 630 mobile GPU", NN_METER, "confirmed", "device", "gpu",
                      {"compute_w": _PHONE_COMPUTE, "idle_w": _PHONE_IDLE, "radio": "lte"}),
    "adreno640_gpu": ("Qualcomm Adreno 640 mobile GPU", NN_METER, "confirmed", "device", "gpu",
                      {"compute_w": _PHONE_COMPUTE, "idle_w": _PHONE_IDLE, "radio": "lte"}),
    "cortex_a76_cpu": ("Arm Cortex-A76 mobile CPU", NN_METER, "confirmed", "device", "cpu",
                       {"compute_w": _PHONE_COMPUTE, "idle_w": _PHONE_IDLE, "radio": "lte"}),
    "myriad_vpu": ("Intel Movidius Myriad VPU (which board: unconfirmed)", NN_METER, "confirmed", "device",
                   "accelerator",
                   {"compute_w": _ACCEL_COMPUTE, "idle_w": _assumed(0.5, "USB accelerator idle; no source found"),
                    "radio": "wifi"}),
    "pixel3": ("Google Pixel 3 phone (CPU)", HW_NAS_BENCH, "confirmed", "device", "cpu",
               {"compute_w": _PHONE_COMPUTE, "idle_w": _PHONE_IDLE, "radio": "lte"}),
    "jetson_tx2_edgegpu": ("NVIDIA Jetson TX2 GPU ('EdgeGPU'; TX2 recalled from the paper, unconfirmed)",
                           HW_NAS_BENCH, "unconfirmed", "device", "gpu",
                           {"compute_w": _assumed(7.5, "Jetson TX2 in its 7.5 W power mode (from memory of "
                                                       "NVIDIA's module modes, not read here)"),
                            "idle_w": _assumed(1.5, "Jetson-class board idle, about the Jetson Nano's "
                                                    "measured 1.39 W"),
                            "radio": "wifi"}),
    "edgetpu_hwnasbench": ("Google Edge TPU (HW-NAS-Bench; 259 networks unmeasured)", HW_NAS_BENCH, "confirmed",
                           "device", "accelerator",
                           {"compute_w": _sourced(4.39, _DEEPEDGEBENCH + "; Coral Dev Board, TFLite + Edge TPU, "
                                                  "MobileNetV2 quantized, whole board"),
                            "idle_w": _sourced(3.08, _DEEPEDGEBENCH + "; Coral Dev Board idle with LAN"),
                            "radio": "wifi"}),
    "eyeriss_asic": ("Eyeriss ASIC accelerator (simulated, not a board)", HW_NAS_BENCH, "simulated", "device",
                     "simulated",
                     {"compute_w": _assumed(0.3, "Eyeriss-class ASIC; simulated device, no measured power"),
                      "idle_w": _assumed(0.05, "simulated device, no measured power"), "radio": "wifi"}),
    "fpga": ("FPGA accelerator (ZC706 recalled from the paper, unconfirmed; simulated)", HW_NAS_BENCH, "simulated",
             "device", "simulated",
             {"compute_w": _assumed(10.0, "ZC706-class FPGA board; simulated device, no measured power"),
              "idle_w": _assumed(5.0, "simulated device, no measured power"), "radio": "wifi"}),
    "raspberry_pi4": ("Raspberry Pi 4 (Arm Cortex-A72 CPU)", HW_NAS_BENCH, "confirmed", "device", "cpu",
                      {"compute_w": _sourced(3.72, _DEEPEDGEBENCH + "; Raspberry Pi 4, TFLite, MobileNetV2 float, "
                                             "whole board"),
                       "idle_w": _sourced(2.65, _DEEPEDGEBENCH + "; Raspberry Pi 4 idle with LAN"),
                       "radio": "wifi"}),
    "gtx1080ti": ("NVIDIA GTX 1080 Ti desktop GPU (server)", BRP_NAS, "confirmed", "server", "server",
                  {"compute_w": _assumed(250.0, "board power limit of the GTX 1080 Ti (from memory of NVIDIA's "
                                                "specification, not read here); an upper bound"),
                   "idle_w": _assumed(60.0, "GPU server idle share; no source found")}),
    "snapdragon855_cpu": ("Qualcomm Snapdragon 855 CPU (not in LatBench's device list: unconfirmed)", BRP_NAS,
                          "unconfirmed", "device", "cpu",
                          {"compute_w": _PHONE_COMPUTE, "idle_w": _PHONE_IDLE, "radio": "lte"}),
    "snapdragon855_dsp": ("Qualcomm Hexagon 690 DSP of the Snapdragon 855", BRP_NAS, "confirmed", "device",
                          "accelerator", {"compute_w": _ACCEL_COMPUTE, "idle_w": _PHONE_IDLE, "radio": "lte"}),
    "snapdragon855_gpu": ("Qualcomm mobile GPU (Adreno 640 of the 855 or LatBench's Adreno 612: unconfirmed)",
                          BRP_NAS, "unconfirmed", "device", "gpu",
                          {"compute_w": _PHONE_COMPUTE, "idle_w": _PHONE_IDLE, "radio": "lte"}),
    "intel_i7": ("Intel Core i7-7820X desktop CPU (server)", BRP_NAS, "confirmed", "server", "server",
                 {"compute_w": _assumed(140.0, "TDP of the i7-7820X (from memory of Intel's specification, "
                                               "not read here)"),
                  "idle_w": _assumed(40.0, "desktop idle; no source found")}),
    "jetson_nano": ("NVIDIA Jetson Nano (GPU)", BRP_NAS, "confirmed", "device", "gpu",
                    {"compute_w": _sourced(7.09, _DEEPEDGEBENCH + "; Jetson Nano, ONNX->TensorRT, MobileNetV2 "
                                           "float, whole board"),
                     "idle_w": _sourced(1.39, _DEEPEDGEBENCH + "; Jetson Nano idle with LAN (mean; spiky)"),
                     "radio": "wifi"}),
    "jetson_nano_16bit": ("NVIDIA Jetson Nano with 16-bit models (precision unconfirmed)", BRP_NAS,
                          "unconfirmed", "device", "gpu",
                          {"compute_w": _sourced(7.09, _DEEPEDGEBENCH + "; Jetson Nano, ONNX->TensorRT, "
                                                 "MobileNetV2 float (no 16-bit run measured), whole board"),
                           "idle_w": _sourced(1.39, _DEEPEDGEBENCH + "; Jetson Nano idle with LAN (mean; spiky)"),
                           "radio": "wifi"}),
    "edgetpu_eagle": ("Google Edge TPU (LatBench)", BRP_NAS, "confirmed", "device", "accelerator",
                      {"compute_w": _sourced(4.39, _DEEPEDGEBENCH + "; Coral Dev Board, TFLite + Edge TPU, "
                                             "MobileNetV2 quantized, whole board"),
                       "idle_w": _sourced(3.08, _DEEPEDGEBENCH + "; Coral Dev Board idle with LAN"),
                       "radio": "wifi"}),
}

SERVERS = tuple(name for name, entry in _DEVICES.items() if entry[3] == "server")


def device_names() -> list[str]:
    return list(_DEVICES)


def entry(name: str) -> dict:
    label, source, status, kind, hw_class, energy = _DEVICES[name]
    flag = "" if status == "confirmed" else f" [{status}]"
    if name in _MEASURED_CV:
        cv, origin = _MEASURED_CV[name]
        spread = {"distribution": "lognormal", "cv": cv, "mean": "nominal", "source": origin}
    elif hw_class == "simulated":
        spread = {"distribution": "none", "cv": 0.0, "mean": "nominal",
                  "source": "simulated device: deterministic"}
    else:
        phone = name in _PHONES
        cv = 0.05 if phone else _ASSUMED_CV[hw_class]
        why = ("phone SoC under an OS with frequency scaling and background load; no measured spread found"
               if phone else "dedicated board/accelerator/server, about as steady as the measured Raspberry Pi 4 "
               "(CV 0.0024) and Jetson Nano (0.0046) in DeepEdgeBench")
        spread = {"distribution": "lognormal", "cv": cv, "mean": "nominal", "source": "assumed", "assumption": why}
    return {"label": label + flag, "source": source, "status": status, "kind": kind, "hardware_class": hw_class,
            "energy": energy, "spread": spread}

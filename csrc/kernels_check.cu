// Every device kernel of the .cuh headers, instantiated without torch: `python3 -m diffusionlm.ops.build_kernels
// --check-cuda-source` compiles this file alone with nvcc for the target architectures (sm_87, sm_90), so the
// kernels are checked on machines without a CUDA torch. Not part of the extension.
#include "draw_kernels.cuh"
#include "rms_norm_kernels.cuh"

// Taking a launcher's address instantiates it and the kernels it launches.
extern "C" void* const dlm_checked_launchers[] = {
    reinterpret_cast<void*>(&dlm::launch_draw<float>),
    reinterpret_cast<void*>(&dlm::launch_draw<double>),
    reinterpret_cast<void*>(&dlm::launch_draw<__half>),
    reinterpret_cast<void*>(&dlm::launch_draw<__nv_bfloat16>),
    reinterpret_cast<void*>(&dlm::launch_rms_norm<float, float>),
    reinterpret_cast<void*>(&dlm::launch_rms_norm<double, double>),
    reinterpret_cast<void*>(&dlm::launch_rms_norm<double, float>),
    reinterpret_cast<void*>(&dlm::launch_rms_norm<__half, __half>),
    reinterpret_cast<void*>(&dlm::launch_rms_norm<__half, float>),
    reinterpret_cast<void*>(&dlm::launch_rms_norm<__nv_bfloat16, __nv_bfloat16>),
    reinterpret_cast<void*>(&dlm::launch_rms_norm<__nv_bfloat16, float>),
};

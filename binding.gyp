{
  "targets": [
    {
      "target_name": "crpo_core",
      "sources": [
        "native/core/addon.cpp",
        "native/common/napi_util.cpp",
        "native/common/ops_binding.cpp",
        "native/kernels/cpu/video_transform_kernel.cpp",
        "native/kernels/cpu/crr_kernel.cpp",
        "native/kernels/cpu/baseline_rewards_kernel.cpp"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_CPP_EXCEPTIONS", "NODE_ADDON_API_CPP_EXCEPTIONS_ALL"],
      "cflags!": ["-fno-exceptions", "-fno-rtti"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
      "cflags_cc": ["-std=c++17", "-O3", "-fexceptions"],
      "xcode_settings": {
        "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
        "CLANG_CXX_LANGUAGE_STANDARD": "c++17"
      }
    }
  ]
}

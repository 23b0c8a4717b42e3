{
  "targets": [
    {
      "target_name": "ferry_torch",
      "sources": ["native/ferry_torch.cc", "native/cpu_allocator.cc"],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "<!@(node scripts/libtorch.mjs include)",
        "<!@(node scripts/libtorch.mjs api)"
      ],
      "libraries": ["<!@(node scripts/libtorch.mjs libs)"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++17"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-frtti", "-O2", "-Wno-unused-parameter"],
      "defines": ["NAPI_CPP_EXCEPTIONS", "NAPI_VERSION=8"]
    }
  ]
}

// Shared precompiled header for every LibTorch translation unit (REUSE_FROM st_model).
#pragma once
#include <torch/torch.h>

// moegrad: the one header users include. Everything lives in namespace mg.
#pragma once
#include "engine/autograd.hpp"
#include "engine/generator.hpp"
#include "engine/ops.hpp"
#include "engine/parallel.hpp"
#include "engine/profiler.hpp"
#include "engine/tensor.hpp"
#include "moe/balance.hpp"
#include "moe/controller.hpp"
#include "moe/expert.hpp"
#include "moe/layer.hpp"
#include "moe/router.hpp"
#include "moe/stats.hpp"

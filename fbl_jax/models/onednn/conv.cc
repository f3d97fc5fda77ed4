// oneDNN 2-D convolutions for XLA's CPU backend, called through the XLA FFI.
//
// XLA's CPU backend runs convolutions on Eigen kernels that are 2-3x slower than oneDNN's on
// CPUs with AVX-512 (ResNet-32, batch 64: BENCHMARKS.md). These handlers run the forward pass,
// the input gradient and the filter gradient of an NHWC x HWIO -> NHWC float32 convolution with
// symmetric zero padding, the only convolution fbl-jax's models use. Activations stay NHWC
// (oneDNN's channels-last kernels); the filter is reordered to the layout the chosen kernel wants
// on every call (it is small). Primitives are built once per shape and kept.
//
// Built on first use by fbl_jax/models/onednn_conv.py (see there for the Python side).

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

namespace {

enum Kind : int { kForward = 0, kBackwardData = 1, kBackwardWeights = 2 };

// n, h, w, c (input); kh, kw, o (filter); stride, pad
using Key = std::tuple<int, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                       int64_t, int64_t>;

struct Plan {
  dnnl::primitive conv;
  memory::desc weights_user;    // HWIO as XLA holds it
  memory::desc weights_kernel;  // what the kernel reads or writes
  bool reorder = false;
  dnnl::reorder to_kernel;      // HWIO -> kernel layout (forward, input gradient)
  dnnl::reorder from_kernel;    // kernel layout -> HWIO (filter gradient)
  // memory objects made once; each call points them at its buffers (calls hold the lock)
  memory src, dst, wei_user, wei, scratch;
  std::vector<char> weight_buffer, scratch_buffer;
};

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

std::mutex& Lock() {
  static std::mutex mutex;
  return mutex;
}

Plan& GetPlan(const Key& key) {
  static std::map<Key, std::unique_ptr<Plan>> plans;
  auto found = plans.find(key);
  if (found != plans.end()) return *found->second;
  auto [kind, n, h, w, c, kh, kw, o, stride, pad] = key;
  const int64_t oh = (h + 2 * pad - kh) / stride + 1;
  const int64_t ow = (w + 2 * pad - kw) / stride + 1;
  auto& eng = Engine();
  memory::desc src({n, c, h, w}, dt::f32, tag::nhwc);
  memory::desc dst({n, o, oh, ow}, dt::f32, tag::nhwc);
  memory::desc scratchpad;
  memory::desc wei_user({o, c, kh, kw}, dt::f32, tag::hwio);
  memory::desc wei_any({o, c, kh, kw}, dt::f32, tag::any);
  memory::dims strides = {stride, stride}, padding = {pad, pad};
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  auto algo = dnnl::algorithm::convolution_direct;
  dnnl::convolution_forward::primitive_desc fwd(eng, dnnl::prop_kind::forward_training, algo,
                                                src, wei_any, dst, strides, padding, padding,
                                                attr);
  auto plan = std::make_unique<Plan>();
  plan->weights_user = wei_user;
  if (kind == kForward) {
    plan->conv = dnnl::convolution_forward(fwd);
    plan->weights_kernel = fwd.weights_desc();
    scratchpad = fwd.scratchpad_desc();
  } else if (kind == kBackwardData) {
    dnnl::convolution_backward_data::primitive_desc bwd(eng, algo, src, wei_any, dst, strides,
                                                        padding, padding, fwd, attr);
    plan->conv = dnnl::convolution_backward_data(bwd);
    plan->weights_kernel = bwd.weights_desc();
    scratchpad = bwd.scratchpad_desc();
  } else {
    dnnl::convolution_backward_weights::primitive_desc bwd(eng, algo, src, wei_any, dst,
                                                           strides, padding, padding, fwd, attr);
    plan->conv = dnnl::convolution_backward_weights(bwd);
    plan->weights_kernel = bwd.diff_weights_desc();
    scratchpad = bwd.scratchpad_desc();
  }
  plan->reorder = plan->weights_kernel != wei_user;
  if (plan->reorder) {
    if (kind == kBackwardWeights) {
      plan->from_kernel = dnnl::reorder(
          dnnl::reorder::primitive_desc(eng, plan->weights_kernel, eng, wei_user));
    } else {
      plan->to_kernel = dnnl::reorder(
          dnnl::reorder::primitive_desc(eng, wei_user, eng, plan->weights_kernel));
    }
  }
  plan->src = memory(src, eng, DNNL_MEMORY_NONE);
  plan->dst = memory(dst, eng, DNNL_MEMORY_NONE);
  plan->wei_user = memory(wei_user, eng, DNNL_MEMORY_NONE);
  if (plan->reorder) {
    plan->weight_buffer.resize(plan->weights_kernel.get_size());
    plan->wei = memory(plan->weights_kernel, eng, plan->weight_buffer.data());
  } else {
    plan->wei = plan->wei_user;
  }
  plan->scratch_buffer.resize(scratchpad.get_size() + 1);
  plan->scratch = memory(scratchpad, eng, plan->scratch_buffer.data());
  return *(plans[key] = std::move(plan));
}

// Runs one convolution. `x` is the NHWC input (forward, filter gradient) or the input gradient
// (input gradient), `y` the NHWC output or output gradient, `weights` the HWIO filter or its
// gradient (filter gradient).
ffi::Error Run(Kind kind, ffi::Span<const int64_t> x_dims, ffi::Span<const int64_t> w_dims,
               float* x, float* weights, float* y, int64_t stride, int64_t pad) {
  if (x_dims.size() != 4 || w_dims.size() != 4) {
    return ffi::Error::InvalidArgument("oneDNN conv: expects NHWC input and HWIO filter");
  }
  Key key{kind,      x_dims[0], x_dims[1], x_dims[2], x_dims[3],
          w_dims[0], w_dims[1], w_dims[3], stride,    pad};
  std::lock_guard<std::mutex> guard(Lock());
  try {
    Plan& plan = GetPlan(key);
    static thread_local dnnl::stream stream(Engine());
    plan.src.set_data_handle(x);
    plan.dst.set_data_handle(y);
    plan.wei_user.set_data_handle(weights);
    if (kind == kForward) {
      if (plan.reorder) plan.to_kernel.execute(stream, plan.wei_user, plan.wei);
      plan.conv.execute(stream, {{DNNL_ARG_SRC, plan.src},
                                 {DNNL_ARG_WEIGHTS, plan.wei},
                                 {DNNL_ARG_DST, plan.dst},
                                 {DNNL_ARG_SCRATCHPAD, plan.scratch}});
    } else if (kind == kBackwardData) {
      if (plan.reorder) plan.to_kernel.execute(stream, plan.wei_user, plan.wei);
      plan.conv.execute(stream, {{DNNL_ARG_DIFF_DST, plan.dst},
                                 {DNNL_ARG_WEIGHTS, plan.wei},
                                 {DNNL_ARG_DIFF_SRC, plan.src},
                                 {DNNL_ARG_SCRATCHPAD, plan.scratch}});
    } else {
      plan.conv.execute(stream, {{DNNL_ARG_SRC, plan.src},
                                 {DNNL_ARG_DIFF_DST, plan.dst},
                                 {DNNL_ARG_DIFF_WEIGHTS, plan.wei},
                                 {DNNL_ARG_SCRATCHPAD, plan.scratch}});
      if (plan.reorder) plan.from_kernel.execute(stream, plan.wei, plan.wei_user);
    }
    stream.wait();
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("oneDNN conv: ") + e.what());
  }
  return ffi::Error::Success();
}

ffi::Error Forward(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                   ffi::ResultBuffer<ffi::F32> y, int64_t stride, int64_t pad) {
  return Run(kForward, x.dimensions(), w.dimensions(), x.typed_data(), w.typed_data(),
             y->typed_data(), stride, pad);
}

// dy: output gradient; x: the forward input, for its shape only; dx: the input gradient
ffi::Error BackwardData(ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> w,
                        ffi::ResultBuffer<ffi::F32> dx, int64_t stride, int64_t pad) {
  return Run(kBackwardData, dx->dimensions(), w.dimensions(), dx->typed_data(), w.typed_data(),
             dy.typed_data(), stride, pad);
}

ffi::Error BackwardWeights(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy,
                           ffi::ResultBuffer<ffi::F32> dw, int64_t stride, int64_t pad) {
  return Run(kBackwardWeights, x.dimensions(), dw->dimensions(), x.typed_data(),
             dw->typed_data(), dy.typed_data(), stride, pad);
}

}  // namespace

// All three take two float32 buffers, return one, and read the stride and padding.
#define FBL_CONV_BINDING                  \
  ffi::Ffi::Bind()                        \
      .Arg<ffi::Buffer<ffi::F32>>()       \
      .Arg<ffi::Buffer<ffi::F32>>()       \
      .Ret<ffi::Buffer<ffi::F32>>()       \
      .Attr<int64_t>("stride")            \
      .Attr<int64_t>("pad")

XLA_FFI_DEFINE_HANDLER_SYMBOL(FblOnednnConvForward, Forward, FBL_CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(FblOnednnConvBackwardData, BackwardData, FBL_CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(FblOnednnConvBackwardWeights, BackwardWeights, FBL_CONV_BINDING);

// ferry's native backend: a thin layer over ATen (libtorch's tensor library), called op by op
// from the TensorFlow.js backend in src/backend.ts.
//
// Tensors live in a slot table owned by this addon and are named by integer ids; JavaScript holds
// ids only, so no tensor is ever left to the garbage collector (free() releases a slot, and the
// backend calls it from disposeData). Data crosses into JavaScript only on create() and read().
//
// Layout: TensorFlow.js tensors are NHWC. A 4-d NHWC tensor is handed to ATen's convolution,
// pooling and BatchNorm as its permute(0, 3, 1, 2) view: an NCHW tensor in channels_last memory,
// which oneDNN consumes without a copy; results come back through permute(0, 2, 3, 1).
// Every input is checked before it is used; a c10::Error becomes a JavaScript Error whose message
// starts with "libtorch:" (the backend turns it into a coded ferry error).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <torch/version.h>
#include <c10/core/GradMode.h>
#include <malloc.h>
#include <napi.h>

#include "cpu_allocator.h"

#include <cstring>
#include <string>
#include <vector>

namespace {

struct Slot {
  at::Tensor t;
  // What a later kernel may reuse: max-pool indices (by the pool's output), a conv filter in
  // ATen's layout (by the TF.js filter; tensors are immutable, so a cache never goes stale).
  at::Tensor aux;
  bool live = false;
};

std::vector<Slot> slots;
std::vector<uint32_t> freeSlots;
at::Device device = at::kCPU;
size_t liveCount = 0;

[[noreturn]] void fail(Napi::Env env, const std::string& what) {
  throw Napi::Error::New(env, "libtorch: " + what);
}

uint32_t put(at::Tensor t) {
  // TensorFlow.js knows float32, int32 and bool: ATen's int64 results (argmax) and doubles are
  // narrowed here, once.
  if (t.scalar_type() == at::kLong) t = t.to(at::kInt);
  if (t.scalar_type() == at::kDouble) t = t.to(at::kFloat);
  uint32_t id;
  if (!freeSlots.empty()) {
    id = freeSlots.back();
    freeSlots.pop_back();
  } else {
    id = static_cast<uint32_t>(slots.size());
    slots.emplace_back();
  }
  slots[id].t = std::move(t);
  slots[id].aux = at::Tensor();
  slots[id].live = true;
  liveCount++;
  return id;
}

Slot& slot(Napi::Env env, const Napi::Value& v) {
  if (!v.IsNumber()) fail(env, "expected a tensor id");
  uint32_t id = v.As<Napi::Number>().Uint32Value();
  if (id >= slots.size() || !slots[id].live) fail(env, "no live tensor with id " + std::to_string(id));
  return slots[id];
}

const at::Tensor& T(const Napi::CallbackInfo& info, size_t i) { return slot(info.Env(), info[i]).t; }

int64_t I(const Napi::CallbackInfo& info, size_t i) {
  if (!info[i].IsNumber()) fail(info.Env(), "argument " + std::to_string(i) + " must be a number");
  return info[i].As<Napi::Number>().Int64Value();
}

double D(const Napi::CallbackInfo& info, size_t i) {
  if (!info[i].IsNumber()) fail(info.Env(), "argument " + std::to_string(i) + " must be a number");
  return info[i].As<Napi::Number>().DoubleValue();
}

bool B(const Napi::CallbackInfo& info, size_t i) { return info[i].ToBoolean().Value(); }

std::vector<int64_t> Ints(const Napi::CallbackInfo& info, size_t i) {
  if (!info[i].IsArray()) fail(info.Env(), "argument " + std::to_string(i) + " must be an array");
  auto a = info[i].As<Napi::Array>();
  std::vector<int64_t> out(a.Length());
  for (uint32_t k = 0; k < a.Length(); k++) out[k] = a.Get(k).As<Napi::Number>().Int64Value();
  return out;
}

std::vector<at::Tensor> Tensors(const Napi::CallbackInfo& info, size_t i) {
  if (!info[i].IsArray()) fail(info.Env(), "argument " + std::to_string(i) + " must be an array of ids");
  auto a = info[i].As<Napi::Array>();
  std::vector<at::Tensor> out;
  out.reserve(a.Length());
  for (uint32_t k = 0; k < a.Length(); k++) out.push_back(slot(info.Env(), a.Get(k)).t);
  return out;
}

at::ScalarType dtypeOf(Napi::Env env, int64_t code) {
  switch (code) {
    case 0: return at::kFloat;
    case 1: return at::kInt;
    case 2: return at::kBool;
  }
  fail(env, "unknown dtype code " + std::to_string(code));
}

Napi::Value Id(Napi::Env env, at::Tensor t) { return Napi::Number::New(env, put(std::move(t))); }

// Runs an op body, turning libtorch's exceptions into JavaScript errors with their message.
template <typename F>
Napi::Value guarded(const Napi::CallbackInfo& info, F body) {
  try {
    at::NoGradGuard noGrad;  // the gradient tape is TensorFlow.js's; ATen never records one
    return body(info);
  } catch (const Napi::Error&) {
    throw;
  } catch (const c10::Error& e) {
    fail(info.Env(), e.what_without_backtrace());
  } catch (const std::exception& e) {
    fail(info.Env(), e.what());
  }
}

#define OP(name) Napi::Value name(const Napi::CallbackInfo& info) { return guarded(info, [](const Napi::CallbackInfo& info) -> Napi::Value {
#define END }); }

at::Tensor toNchw(const at::Tensor& nhwc) { return nhwc.permute({0, 3, 1, 2}); }
at::Tensor toNhwc(const at::Tensor& nchw) { return nchw.permute({0, 2, 3, 1}); }

// ---- tensors in and out -------------------------------------------------------------------

OP(Create)
  auto env = info.Env();
  auto shape = Ints(info, 1);
  auto dtype = dtypeOf(env, I(info, 2));
  int64_t n = 1;
  for (auto d : shape) {
    if (d < 0) fail(env, "negative dimension");
    n *= d;
  }
  if (!info[0].IsTypedArray()) fail(env, "create: values must be a typed array");
  auto ta = info[0].As<Napi::TypedArray>();
  size_t elem = dtype == at::kBool ? 1 : 4;
  if (ta.ByteLength() != static_cast<size_t>(n) * elem)
    fail(env, "create: " + std::to_string(ta.ByteLength()) + " bytes for " + std::to_string(n) + " elements");
  auto* data = static_cast<uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
  auto t = at::empty(shape, at::TensorOptions().dtype(dtype));
  if (n > 0) std::memcpy(t.data_ptr(), data, ta.ByteLength());
  if (device != at::kCPU) t = t.to(device);
  return Id(env, t);
END

OP(Read)
  auto env = info.Env();
  auto t = T(info, 0).to(at::kCPU).contiguous();
  size_t bytes = t.numel() * t.element_size();
  auto buf = Napi::ArrayBuffer::New(env, bytes);
  if (bytes > 0) std::memcpy(buf.Data(), t.data_ptr(), bytes);
  switch (t.scalar_type()) {
    case at::kFloat: return Napi::Float32Array::New(env, t.numel(), buf, 0);
    case at::kInt: return Napi::Int32Array::New(env, t.numel(), buf, 0);
    case at::kBool: return Napi::Uint8Array::New(env, t.numel(), buf, 0);
    default: fail(env, std::string("read: unsupported dtype ") + c10::toString(t.scalar_type()));
  }
END

Napi::Value Free(const Napi::CallbackInfo& info) {
  auto& s = slot(info.Env(), info[0]);
  s.t = at::Tensor();
  s.aux = at::Tensor();
  s.live = false;
  liveCount--;
  freeSlots.push_back(info[0].As<Napi::Number>().Uint32Value());
  return info.Env().Undefined();
}

Napi::Value Shape(const Napi::CallbackInfo& info) {
  auto& t = T(info, 0);
  auto a = Napi::Array::New(info.Env(), t.dim());
  for (int64_t i = 0; i < t.dim(); i++) a.Set(static_cast<uint32_t>(i), Napi::Number::New(info.Env(), t.size(i)));
  return a;
}


// ---- element-wise ------------------------------------------------------------------------

enum Binary { ADD, SUB, MUL, DIV, MAXIMUM, MINIMUM, POW, SQDIFF, GREATER, GREATER_EQUAL, LESS, LESS_EQUAL,
              EQUAL, NOT_EQUAL, AND, OR, FLOOR_DIV, MOD, ATAN2 };

OP(BinaryOp)
  auto& a = T(info, 1);
  auto& b = T(info, 2);
  at::Tensor r;
  switch (I(info, 0)) {
    case ADD: r = at::add(a, b); break;
    case SUB: r = at::sub(a, b); break;
    case MUL: r = at::mul(a, b); break;
    case DIV: r = at::div(a, b); break;
    case MAXIMUM: r = at::maximum(a, b); break;
    case MINIMUM: r = at::minimum(a, b); break;
    case POW: r = at::pow(a, b); break;
    case SQDIFF: r = at::square(at::sub(a, b)); break;
    case GREATER: r = at::gt(a, b); break;
    case GREATER_EQUAL: r = at::ge(a, b); break;
    case LESS: r = at::lt(a, b); break;
    case LESS_EQUAL: r = at::le(a, b); break;
    case EQUAL: r = at::eq(a, b); break;
    case NOT_EQUAL: r = at::ne(a, b); break;
    case AND: r = at::logical_and(a, b); break;
    case OR: r = at::logical_or(a, b); break;
    case FLOOR_DIV: r = at::div(a, b, "floor"); break;
    case MOD: r = at::remainder(a, b); break;
    case ATAN2: r = at::atan2(a, b); break;
    default: fail(info.Env(), "unknown binary op");
  }
  // The dtype TensorFlow.js expects (its upcast rule, decided in JavaScript).
  auto want = dtypeOf(info.Env(), I(info, 3));
  return Id(info.Env(), r.scalar_type() == want ? r : r.to(want));
END

enum Unary { NEG, EXP, LOG, SQRT, RSQRT, SQUARE, RELU, RELU6, ABS, SIGN, FLOOR, CEIL, ROUND, RECIPROCAL,
             SIGMOID, TANH, LOG1P, EXPM1, ERF, NOT, ISNAN, SIN, COS, SOFTPLUS, ELU, IDENTITY, ISINF, SELU };

OP(UnaryOp)
  auto& a = T(info, 1);
  at::Tensor r;
  switch (I(info, 0)) {
    case NEG: r = at::neg(a); break;
    case EXP: r = at::exp(a); break;
    case LOG: r = at::log(a); break;
    case SQRT: r = at::sqrt(a); break;
    case RSQRT: r = at::rsqrt(a); break;
    case SQUARE: r = at::square(a); break;
    case RELU: r = at::relu(a); break;
    case RELU6: r = at::clamp(a, 0, 6); break;
    case ABS: r = at::abs(a); break;
    case SIGN: r = at::sign(a); break;
    case FLOOR: r = at::floor(a); break;
    case CEIL: r = at::ceil(a); break;
    case ROUND: r = at::round(a); break;  // half to even, as TensorFlow.js
    case RECIPROCAL: r = at::reciprocal(a); break;
    case SIGMOID: r = at::sigmoid(a); break;
    case TANH: r = at::tanh(a); break;
    case LOG1P: r = at::log1p(a); break;
    case EXPM1: r = at::expm1(a); break;
    case ERF: r = at::erf(a); break;
    case NOT: r = at::logical_not(a); break;
    case ISNAN: r = at::isnan(a); break;
    case SIN: r = at::sin(a); break;
    case COS: r = at::cos(a); break;
    case SOFTPLUS: r = at::softplus(a); break;
    case ELU: r = at::elu(a); break;
    case IDENTITY: r = a.clone(); break;
    case ISINF: r = at::isinf(a); break;
    case SELU: r = at::selu(a); break;
    default: fail(info.Env(), "unknown unary op");
  }
  return Id(info.Env(), r);
END

// TensorFlow.js's Step: x > 0 ? 1 : (isnan(x) ? nan : alpha).
OP(Step)
  auto& a = T(info, 0);
  auto alpha = D(info, 1);
  auto r = at::where(at::gt(a, 0), at::ones_like(a), at::full_like(a, alpha));
  return Id(info.Env(), at::where(at::isnan(a), a, r));
END

OP(Cast)
  return Id(info.Env(), T(info, 0).to(dtypeOf(info.Env(), I(info, 1))));
END

OP(Clip)
  return Id(info.Env(), at::clamp(T(info, 0), D(info, 1), D(info, 2)));
END

OP(Where)
  return Id(info.Env(), at::where(T(info, 0), T(info, 1), T(info, 2)));
END

OP(LeakyRelu)
  return Id(info.Env(), at::leaky_relu(T(info, 0), D(info, 1)));
END

OP(Prelu)
  auto& x = T(info, 0);
  return Id(info.Env(), at::where(at::gt(x, 0), x, at::mul(x, T(info, 1))));
END

// ---- shapes ------------------------------------------------------------------------------

OP(Reshape)
  return Id(info.Env(), T(info, 0).reshape(Ints(info, 1)));
END

OP(Transpose)
  // A strided view: ATen's element-wise kernels read it as is; read() and reshape() copy if needed.
  return Id(info.Env(), T(info, 0).permute(Ints(info, 1)));
END

OP(StridedSlice)
  // begin/end/strides already normalised by TensorFlow.js's slice_util (positive strides only here);
  // Slice is this with unit strides.
  auto t = T(info, 0);
  auto begin = Ints(info, 1);
  auto end = Ints(info, 2);
  auto strides = Ints(info, 3);
  for (size_t d = 0; d < begin.size(); d++) {
    if (strides[d] <= 0) fail(info.Env(), "StridedSlice: negative strides are not supported");
    t = t.slice(static_cast<int64_t>(d), begin[d], end[d], strides[d]);
  }
  return Id(info.Env(), t.contiguous());
END

OP(Concat)
  return Id(info.Env(), at::cat(Tensors(info, 0), I(info, 1)));
END

OP(Stack)
  return Id(info.Env(), at::stack(Tensors(info, 0), I(info, 1)));
END

// Returns the ids of the pieces: unbind (Unpack) when sizes is empty, else split_with_sizes.
OP(Split)
  auto& t = T(info, 0);
  auto sizes = Ints(info, 1);
  auto axis = I(info, 2);
  auto parts = sizes.empty() ? at::unbind(t, axis) : at::split_with_sizes(t, sizes, axis);
  auto a = Napi::Array::New(info.Env(), parts.size());
  for (size_t i = 0; i < parts.size(); i++) a.Set(static_cast<uint32_t>(i), Id(info.Env(), parts[i].contiguous()));
  return a;
END

OP(Pad)
  // paddings as TensorFlow.js gives them: [before0, after0, before1, after1, ...]; ATen wants the
  // last dimension first.
  auto p = Ints(info, 1);
  std::vector<int64_t> rev;
  for (size_t d = p.size() / 2; d-- > 0;) {
    rev.push_back(p[2 * d]);
    rev.push_back(p[2 * d + 1]);
  }
  return Id(info.Env(), at::constant_pad_nd(T(info, 0), rev, D(info, 2)));
END

OP(Tile)
  return Id(info.Env(), T(info, 0).repeat(Ints(info, 1)));
END

OP(Flip)
  return Id(info.Env(), at::flip(T(info, 0), Ints(info, 1)));
END

OP(Fill)
  auto shape = Ints(info, 0);
  auto dtype = dtypeOf(info.Env(), I(info, 2));
  return Id(info.Env(), at::full(shape, D(info, 1), at::TensorOptions().dtype(dtype).device(device)));
END

OP(Range)
  auto dtype = dtypeOf(info.Env(), I(info, 3));
  auto r = at::arange(D(info, 0), D(info, 1), D(info, 2), at::TensorOptions().dtype(at::kDouble).device(device));
  return Id(info.Env(), r.to(dtype));
END

OP(OneHot)
  auto idx = T(info, 0).to(at::kLong);
  auto depth = I(info, 1);
  auto on = D(info, 2), off = D(info, 3);
  auto dtype = dtypeOf(info.Env(), I(info, 4));
  // TensorFlow.js: an index outside [0, depth) gives a row of off values.
  auto valid = at::logical_and(at::ge(idx, 0), at::lt(idx, depth));
  auto oh = at::one_hot(at::where(valid, idx, at::zeros_like(idx)), depth).to(at::kDouble);
  oh = at::mul(oh, valid.unsqueeze(-1).to(at::kDouble));
  return Id(info.Env(), at::add(at::mul(oh, on - off), off).to(dtype));
END

OP(Gather)
  // GatherV2 with batchDims 0: the indices' shape replaces the axis.
  auto& x = T(info, 0);
  auto idx = T(info, 1).to(at::kLong);
  auto axis = I(info, 2);
  auto flat = at::index_select(x, axis, idx.reshape({-1}));
  std::vector<int64_t> shape;
  for (int64_t d = 0; d < axis; d++) shape.push_back(x.size(d));
  for (auto d : idx.sizes()) shape.push_back(d);
  for (int64_t d = axis + 1; d < x.dim(); d++) shape.push_back(x.size(d));
  return Id(info.Env(), flat.reshape(shape));
END

// ---- reductions --------------------------------------------------------------------------

enum Reduce { SUM, MEAN, MAX, MIN, PROD, ANY, ALL };

OP(ReduceOp)
  auto x = T(info, 1);
  auto axes = Ints(info, 2);
  bool keep = B(info, 3);
  at::Tensor r;
  switch (I(info, 0)) {
    case SUM: r = x.scalar_type() == at::kBool ? at::sum(x.to(at::kInt), axes, keep) : at::sum(x, axes, keep); break;
    case MEAN: r = at::mean(x, axes, keep); break;
    case MAX: r = axes.empty() ? x.clone() : at::amax(x, axes, keep); break;
    case MIN: r = axes.empty() ? x.clone() : at::amin(x, axes, keep); break;
    case PROD:
      r = x;
      for (size_t i = axes.size(); i-- > 0;) r = at::prod(r, axes[i], keep);
      break;
    case ANY:
      r = x.to(at::kBool);
      for (size_t i = axes.size(); i-- > 0;) r = at::any(r, axes[i], keep);
      break;
    case ALL:
      r = x.to(at::kBool);
      for (size_t i = axes.size(); i-- > 0;) r = at::all(r, axes[i], keep);
      break;
    default: fail(info.Env(), "unknown reduction");
  }
  if (x.scalar_type() == at::kInt && r.scalar_type() != at::kInt && I(info, 0) != MEAN) r = r.to(at::kInt);
  return Id(info.Env(), r);
END

OP(ArgMinMax)
  auto& x = T(info, 0);
  auto axis = I(info, 1);
  return Id(info.Env(), B(info, 2) ? at::argmax(x, axis) : at::argmin(x, axis));
END

OP(Cumsum)
  auto x = T(info, 0);
  auto axis = I(info, 1);
  bool exclusive = B(info, 2), reverse = B(info, 3);
  if (reverse) x = at::flip(x, {axis});
  auto r = at::cumsum(x, axis);
  if (exclusive) r = at::sub(r, x);
  if (reverse) r = at::flip(r, {axis});
  return Id(info.Env(), r);
END

OP(Softmax)
  return Id(info.Env(), at::softmax(T(info, 0), -1));
END

OP(LogSoftmax)
  return Id(info.Env(), at::log_softmax(T(info, 0), -1));
END

// ---- linear algebra ----------------------------------------------------------------------

OP(MatMul)
  auto a = T(info, 0);
  auto b = T(info, 1);
  if (B(info, 2)) a = a.transpose(-1, -2);
  if (B(info, 3)) b = b.transpose(-1, -2);
  return Id(info.Env(), at::matmul(a, b));
END

// ---- convolution and pooling (NHWC in, NHWC out) -----------------------------------------

struct ConvGeom {
  std::vector<int64_t> stride, dilation;
  int64_t top, bottom, left, right;
  bool symmetric() const { return top == bottom && left == right; }
};

ConvGeom geom(const Napi::CallbackInfo& info, size_t i) {
  auto g = Ints(info, i);  // [sh, sw, dh, dw, top, bottom, left, right]
  if (g.size() != 8) fail(info.Env(), "convolution geometry needs 8 numbers");
  return {{g[0], g[1]}, {g[2], g[3]}, g[4], g[5], g[6], g[7]};
}

// The TF.js filter [kh, kw, in, out] (depthwise: [kh, kw, c, mult]) as ATen's [out, in, kh, kw],
// channels_last. Cached on the filter's slot: the forward and both gradients of a step reuse it.
at::Tensor atenFilter(Slot& s, bool depthwise) {
  if (s.aux.defined()) return s.aux;
  auto& w = s.t;
  at::Tensor f;
  if (depthwise) {
    f = w.reshape({w.size(0), w.size(1), w.size(2) * w.size(3)}).permute({2, 0, 1}).unsqueeze(1);
  } else {
    f = w.permute({3, 2, 0, 1});
  }
  s.aux = f.contiguous(at::MemoryFormat::ChannelsLast);
  return s.aux;
}

// NHWC input, explicitly padded where the padding is asymmetric (ATen pads symmetrically).
at::Tensor padded(const at::Tensor& nhwc, const ConvGeom& g, double value = 0) {
  if (g.symmetric()) return toNchw(nhwc);
  return toNchw(at::constant_pad_nd(nhwc, {0, 0, g.left, g.right, g.top, g.bottom}, value));
}

std::vector<int64_t> atenPad(const ConvGeom& g) {
  return g.symmetric() ? std::vector<int64_t>{g.top, g.left} : std::vector<int64_t>{0, 0};
}

OP(Conv2d)
  auto env = info.Env();
  auto& x = T(info, 0);
  auto& ws = slot(env, info[1]);
  bool depthwise = B(info, 2);
  auto g = geom(info, 3);
  auto w = atenFilter(ws, depthwise);
  auto groups = depthwise ? x.size(3) : 1;
  auto in = padded(x, g).contiguous(at::MemoryFormat::ChannelsLast);
  auto y = at::convolution(in, w, c10::nullopt, g.stride, atenPad(g), g.dilation, false, {0, 0}, groups);
  return Id(env, toNhwc(y).contiguous());
END

// dL/dx of a convolution: inputShape is the NHWC shape of x.
OP(Conv2dBackpropInput)
  auto env = info.Env();
  auto& dy = T(info, 0);
  auto& ws = slot(env, info[1]);
  bool depthwise = B(info, 2);
  auto g = geom(info, 3);
  auto shape = Ints(info, 4);  // NHWC
  auto w = atenFilter(ws, depthwise);
  int64_t ph = shape[1] + (g.symmetric() ? 0 : g.top + g.bottom);
  int64_t pw = shape[2] + (g.symmetric() ? 0 : g.left + g.right);
  auto groups = depthwise ? shape[3] : 1;
  auto dyc = toNchw(dy).contiguous(at::MemoryFormat::ChannelsLast);
  auto r = at::convolution_backward(dyc, at::empty({shape[0], shape[3], ph, pw}, dy.options()).contiguous(at::MemoryFormat::ChannelsLast),
                                    w, c10::nullopt, g.stride, atenPad(g), g.dilation, false, {0, 0}, groups,
                                    {true, false, false});
  auto dx = toNhwc(std::get<0>(r));
  if (!g.symmetric()) dx = dx.narrow(1, g.top, shape[1]).narrow(2, g.left, shape[2]);
  return Id(env, dx.contiguous());
END

// dL/dfilter, in TF.js's filter layout (filterShape).
OP(Conv2dBackpropFilter)
  auto env = info.Env();
  auto& x = T(info, 0);
  auto& dy = T(info, 1);
  bool depthwise = B(info, 2);
  auto g = geom(info, 3);
  auto fshape = Ints(info, 4);  // [kh, kw, in, out] or [kh, kw, c, mult]
  auto in = padded(x, g).contiguous(at::MemoryFormat::ChannelsLast);
  auto dyc = toNchw(dy).contiguous(at::MemoryFormat::ChannelsLast);
  auto groups = depthwise ? x.size(3) : 1;
  std::vector<int64_t> wshape = depthwise ? std::vector<int64_t>{fshape[2] * fshape[3], 1, fshape[0], fshape[1]}
                                          : std::vector<int64_t>{fshape[3], fshape[2], fshape[0], fshape[1]};
  auto wproto = at::empty(wshape, x.options()).contiguous(at::MemoryFormat::ChannelsLast);
  auto r = at::convolution_backward(dyc, in, wproto, c10::nullopt, g.stride, atenPad(g), g.dilation, false, {0, 0},
                                    groups, {false, true, false});
  auto dw = std::get<1>(r);
  at::Tensor out = depthwise ? dw.squeeze(1).permute({1, 2, 0}).reshape(fshape) : dw.permute({2, 3, 1, 0});
  return Id(env, out.contiguous());
END

OP(MaxPool)
  auto env = info.Env();
  auto& x = T(info, 0);
  auto k = Ints(info, 1);
  auto g = geom(info, 2);
  auto in = padded(x, g, -std::numeric_limits<double>::infinity());
  auto r = at::max_pool2d_with_indices(in, k, g.stride, atenPad(g), g.dilation, false);
  auto id = put(toNhwc(std::get<0>(r)).contiguous());
  // Kept for MaxPoolGrad, which TensorFlow.js calls with this output.
  slots[id].aux = std::get<1>(r);
  return Napi::Number::New(env, id);
END

OP(MaxPoolGrad)
  auto env = info.Env();
  auto& dy = T(info, 0);
  auto& x = T(info, 1);
  auto& ys = slot(env, info[2]);
  auto k = Ints(info, 3);
  auto g = geom(info, 4);
  auto in = padded(x, g, -std::numeric_limits<double>::infinity());
  at::Tensor idx = ys.aux;
  if (!idx.defined()) idx = std::get<1>(at::max_pool2d_with_indices(in, k, g.stride, atenPad(g), g.dilation, false));
  auto dx = at::max_pool2d_with_indices_backward(toNchw(dy), in, k, g.stride, atenPad(g), g.dilation, false, idx);
  auto out = toNhwc(dx);
  if (!g.symmetric()) out = out.narrow(1, g.top, x.size(1)).narrow(2, g.left, x.size(2));
  return Id(env, out.contiguous());
END

OP(AvgPool)
  // TensorFlow.js averages over the window's valid (unpadded) positions: count_include_pad false.
  auto& x = T(info, 0);
  auto k = Ints(info, 1);
  auto g = geom(info, 2);
  if (!g.symmetric()) fail(info.Env(), "AvgPool: asymmetric padding is not supported");
  auto y = at::avg_pool2d(toNchw(x), k, g.stride, {g.top, g.left}, false, false);
  return Id(info.Env(), toNhwc(y).contiguous());
END

OP(AvgPoolGrad)
  auto& dy = T(info, 0);
  auto& x = T(info, 1);
  auto k = Ints(info, 2);
  auto g = geom(info, 3);
  if (!g.symmetric()) fail(info.Env(), "AvgPoolGrad: asymmetric padding is not supported");
  auto dx = at::avg_pool2d_backward(toNchw(dy), toNchw(x), k, g.stride, {g.top, g.left}, false, false, c10::nullopt);
  return Id(info.Env(), toNhwc(dx).contiguous());
END

// ---- BatchNorm (NHWC; channels last) -----------------------------------------------------

// Inference: (x - mean) / sqrt(var + eps) * scale + offset; scale/offset may be absent (-1).
OP(BatchNormInfer)
  auto env = info.Env();
  auto& x = T(info, 0);
  at::Tensor scale = info[3].IsNumber() && I(info, 3) >= 0 ? T(info, 3) : at::Tensor();
  at::Tensor offset = info[4].IsNumber() && I(info, 4) >= 0 ? T(info, 4) : at::Tensor();
  if (x.dim() != 4) {
    auto inv = at::rsqrt(at::add(T(info, 2), D(info, 5)));
    auto y = at::mul(at::sub(x, T(info, 1)), scale.defined() ? at::mul(inv, scale) : inv);
    return Id(env, offset.defined() ? at::add(y, offset) : y);
  }
  auto y = at::batch_norm(toNchw(x), scale, offset, T(info, 1), T(info, 2), false, 0.0, D(info, 5), false);
  return Id(env, toNhwc(y).contiguous());
END

// Inference: act(BatchNorm(x) + residual) with running statistics, the add and the activation in
// place on the fresh output, so a layer holds one activation besides its input (as PyTorch's
// in-place ReLU does), not three. residual: an id or -1; act: 0 none, 1 relu, 2 relu6.
OP(BatchNormInferAct)
  auto env = info.Env();
  auto& x = T(info, 0);
  if (x.dim() != 4) fail(env, "BatchNormInferAct takes an NHWC tensor");
  at::Tensor scale = I(info, 3) >= 0 ? T(info, 3) : at::Tensor();
  at::Tensor offset = I(info, 4) >= 0 ? T(info, 4) : at::Tensor();
  auto y = toNhwc(at::batch_norm(toNchw(x), scale, offset, T(info, 1), T(info, 2), false, 0.0, D(info, 5), false)).contiguous();
  if (I(info, 6) >= 0) y.add_(T(info, 6));
  switch (I(info, 7)) {
    case 0: break;
    case 1: y.relu_(); break;
    case 2: y.clamp_(0, 6); break;
    default: fail(env, "BatchNormInferAct: unknown activation");
  }
  return Id(env, y);
END

// Training: returns [y, mean, biased variance, invstd] (batch statistics; invstd = 1 / sqrt(var + eps)).
OP(BatchNormTrain)
  auto env = info.Env();
  auto& x = T(info, 0);
  // Running buffers at momentum 1 receive the batch mean and torch's own unbiased variance; the
  // biased one (what the running-statistic update and the all-reduce of a group take) follows.
  auto c = x.size(3);
  auto n = x.numel() / std::max<int64_t>(c, 1);
  auto rm = at::zeros({c}, x.options());
  auto rv = at::zeros({c}, x.options());
  auto r = at::native_batch_norm(toNchw(x), T(info, 1), T(info, 2), rm, rv, true, 1.0, D(info, 3));
  auto biased = n > 1 ? at::mul(rv, static_cast<double>(n - 1) / static_cast<double>(n)) : at::zeros_like(rv);
  auto a = Napi::Array::New(env, 4);
  a.Set(0u, Id(env, toNhwc(std::get<0>(r)).contiguous()));
  a.Set(1u, Id(env, std::get<1>(r)));
  a.Set(2u, Id(env, biased));
  a.Set(3u, Id(env, std::get<2>(r)));
  return a;
END

// libtorch's fused backward: [dx, dgamma, dbeta].
OP(BatchNormTrainGrad)
  auto env = info.Env();
  auto& dy = T(info, 0);
  auto& x = T(info, 1);
  auto r = at::native_batch_norm_backward(toNchw(dy).contiguous(at::MemoryFormat::ChannelsLast), toNchw(x), T(info, 2),
                                          at::Tensor(), at::Tensor(), T(info, 3), T(info, 4), true, D(info, 5),
                                          {true, true, true});
  auto a = Napi::Array::New(env, 3);
  a.Set(0u, Id(env, toNhwc(std::get<0>(r)).contiguous()));
  a.Set(1u, Id(env, std::get<1>(r)));
  a.Set(2u, Id(env, std::get<2>(r)));
  return a;
END

// Softmax cross-entropy with integer labels, mean over the batch: [loss, dlogits] where dlogits
// is the gradient of the mean loss (softmax - onehot) / n, both from libtorch's fused kernels.
// The backward of ReLU / ReLU6 from their output (what the models keep): dy where y > 0
// (threshold_backward), or where 0 < y < 6 (hardtanh_backward). One kernel, not a mask and a product.
OP(ActivationGrad)
  auto env = info.Env();
  auto& dy = T(info, 0);
  auto& y = T(info, 1);
  switch (I(info, 2)) {
    case 1: return Id(env, at::threshold_backward(dy, y, 0));
    case 2: return Id(env, at::hardtanh_backward(dy, y, 0, 6));
    default: fail(env, "ActivationGrad: unknown activation");
  }
END

// torch.optim.SGD's step for one parameter (dampening 0), as two fused add-scaled calls:
// g' = g + wd p; buf' = g' + mu buf; p' = p - lr (nesterov ? g' + mu buf' : buf'). Returns [buf', p'].
OP(SgdMomentum)
  auto env = info.Env();
  auto& p = T(info, 0);
  auto& buf = T(info, 1);
  auto& g = T(info, 2);
  const double lr = D(info, 3), mu = D(info, 4), wd = D(info, 5);
  auto gd = wd != 0 ? at::add(g, p, wd) : g;
  auto next = at::add(gd, buf, mu);
  auto step = B(info, 6) ? at::add(gd, next, mu) : next;
  auto a = Napi::Array::New(env, 2);
  a.Set(0u, Id(env, next));
  a.Set(1u, Id(env, at::add(p, step, -lr)));
  return a;
END

OP(SoftmaxCrossEntropy)
  auto env = info.Env();
  auto& logits = T(info, 0);
  auto labels = T(info, 1).to(at::kLong);
  auto logp = at::log_softmax(logits, 1);
  auto fwd = at::nll_loss_forward(logp, labels, {}, at::Reduction::Mean, -100);
  auto& loss = std::get<0>(fwd);
  // total_weight (the batch size here) is what the mean divides by, in the backward too.
  auto grad = at::_log_softmax_backward_data(
      at::nll_loss_backward(at::ones({}, logits.options()), logp, labels, {}, at::Reduction::Mean, -100,
                            std::get<1>(fwd)),
      logp, 1, logits.scalar_type());
  auto a = Napi::Array::New(env, 2);
  a.Set(0u, Id(env, loss));
  a.Set(1u, Id(env, grad));
  return a;
END

// ---- process -----------------------------------------------------------------------------

Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  at::set_num_threads(static_cast<int>(I(info, 0)));
  return info.Env().Undefined();
}

Napi::Value SetMemoryLimit(const Napi::CallbackInfo& info) {
  ferry::setCpuMemoryLimit(static_cast<size_t>(D(info, 0)));
  return info.Env().Undefined();
}

Napi::Value SetDevice(const Napi::CallbackInfo& info) {
  return guarded(info, [](const Napi::CallbackInfo& info) -> Napi::Value {
    auto name = info[0].As<Napi::String>().Utf8Value();
    at::Device d(name);
    if (d.is_cuda() && !at::hasCUDA()) fail(info.Env(), "this libtorch was built without CUDA (device " + name + ")");
    device = d;
    return info.Env().Undefined();
  });
}

Napi::Value MemoryStats(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  const auto m = ferry::cpuMemoryStats();
  auto o = Napi::Object::New(env);
  o.Set("liveTensors", static_cast<double>(liveCount));
  o.Set("inUseBytes", static_cast<double>(m.inUseBytes));
  o.Set("cachedBytes", static_cast<double>(m.cachedBytes));
  o.Set("peakInUseBytes", static_cast<double>(m.peakInUseBytes));
  o.Set("blocks", static_cast<double>(m.blocks));
  o.Set("hits", static_cast<double>(m.hits));
  o.Set("misses", static_cast<double>(m.misses));
  return o;
}

Napi::Value Info(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  auto o = Napi::Object::New(env);
  o.Set("version", TORCH_VERSION);
  o.Set("mkldnnVersion", at::get_mkldnn_version());
  o.Set("threads", at::get_num_threads());
  o.Set("mkldnn", at::hasMKLDNN());
  o.Set("cuda", at::hasCUDA());
  o.Set("device", device.str());
  o.Set("parallel", at::get_parallel_info());
  return o;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  // Large tensor buffers from a per-size cache (cpu_allocator.h): no page faults per step, no
  // heap fragmentation. The rest (under 1 MiB) stay on glibc's heap, never mmap'd and trimmed:
  // glibc's default would map and page-fault every buffer from 128 KiB each step.
  mallopt(M_MMAP_THRESHOLD, 2 << 20);
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
  ferry::installCachingCpuAllocator(256u << 20);
  slots.reserve(1 << 16);
#define FN(name) exports.Set(#name, Napi::Function::New(env, name, #name))
  FN(Create); FN(Read); FN(Free); FN(Shape); FN(MemoryStats);
  FN(BinaryOp); FN(UnaryOp); FN(Step); FN(Cast); FN(Clip); FN(Where); FN(LeakyRelu); FN(Prelu);
  FN(Reshape); FN(Transpose); FN(StridedSlice); FN(Concat); FN(Stack); FN(Split); FN(Pad);
  FN(Tile); FN(Flip); FN(Fill); FN(Range); FN(OneHot); FN(Gather);
  FN(ReduceOp); FN(ArgMinMax); FN(Cumsum); FN(Softmax); FN(LogSoftmax); FN(MatMul);
  FN(Conv2d); FN(Conv2dBackpropInput); FN(Conv2dBackpropFilter); FN(MaxPool); FN(MaxPoolGrad);
  FN(AvgPool); FN(AvgPoolGrad); FN(BatchNormInfer); FN(BatchNormInferAct); FN(BatchNormTrain); FN(BatchNormTrainGrad);
  FN(SoftmaxCrossEntropy); FN(ActivationGrad); FN(SgdMomentum); FN(SetThreads); FN(SetMemoryLimit); FN(SetDevice); FN(Info);
#undef FN
  return exports;
}

}  // namespace

NODE_API_MODULE(ferry_torch, Init)

// An example kernel module to publish to the registry (docs/KERNELS.md):
// `tensor-wasm kernel publish kernels/examples/add_scalar.cu --name acme/add:1.0.0 --sign KEY`.
// Each `@kernel` line is a kernel's declared signature; the host checks
// every launch's arguments against it, including that `x` has room for `n`
// floats from its offset. The kernel guards its index against `n`.
//
// @kernel add_scalar(x: f32[n], value: f32, n: u32)

extern "C" __global__ void add_scalar(float *x, float value, unsigned n) {
    unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] += value;
}

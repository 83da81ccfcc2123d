// Vetted module "basics": small kernels guests may launch through wasi:cuda
// (`module.load("basics")`). Each `@kernel` line below is the kernel's
// declared signature: the host checks a guest's declared parameter kinds
// against it, and before every launch checks that each pointer argument has
// room for its extent (`f32[n]` = n f32 elements from the pointer's offset),
// computed from the launch's own scalar arguments. Every kernel guards its
// index against the extents it was given.
//
// @kernel vector_add(a: f32[n], b: f32[n], out: f32[n], n: u32)
// @kernel saxpy(alpha: f32, x: f32[n], y: f32[n], n: u64)
// @kernel scale_i64(x: i64[n], factor: i64, n: i32)
// @kernel fill_f64(out: f64[n], value: f64, n: u32)
// @kernel transpose_f32(input: f32[rows*cols], output: f32[rows*cols], rows: u32, cols: u32)
// @kernel empty()

extern "C" __global__ void vector_add(const float *a, const float *b, float *out, unsigned n) {
    unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = a[i] + b[i];
}

extern "C" __global__ void saxpy(float alpha, const float *x, float *y, unsigned long long n) {
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n;
         i += (unsigned long long)gridDim.x * blockDim.x)
        y[i] = alpha * x[i] + y[i];
}

extern "C" __global__ void scale_i64(long long *x, long long factor, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] *= factor;
}

extern "C" __global__ void fill_f64(double *out, double value, unsigned n) {
    unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = value;
}

extern "C" __global__ void transpose_f32(const float *input, float *output, unsigned rows, unsigned cols) {
    unsigned c = blockIdx.x * blockDim.x + threadIdx.x;
    unsigned r = blockIdx.y * blockDim.y + threadIdx.y;
    if (r < rows && c < cols) output[(unsigned long long)c * rows + r] = input[(unsigned long long)r * cols + c];
}

extern "C" __global__ void empty() {}

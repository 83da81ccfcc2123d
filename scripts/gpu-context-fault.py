# Does an illegal address in one CUDA context break the others of the process,
# and other processes? Run on a GPU machine: python3 scripts/gpu-context-fault.py
# (the CUDA driver API through ctypes; docs/GPU-RESULTS.md run 24b).
import ctypes, sys
cu = ctypes.CDLL("libcuda.so.1")
def ck(name, r):
    print(f"{name}: {r}", flush=True); return r
CUctx = ctypes.c_void_p
ck("cuInit", cu.cuInit(0))
dev = ctypes.c_int()
ck("cuDeviceGet", cu.cuDeviceGet(ctypes.byref(dev), 0))
prim = CUctx()
ck("cuDevicePrimaryCtxRetain", cu.cuDevicePrimaryCtxRetain(ctypes.byref(prim), dev))
a, b = CUctx(), CUctx()
create = getattr(cu, "cuCtxCreate_v2")
ck("create A", create(ctypes.byref(a), 0, dev))
ck("create B", create(ctypes.byref(b), 0, dev))
ptx = b"""
.version 7.0
.target sm_52
.address_size 64
.visible .entry wild(.param .u64 p)
{
  .reg .b64 %rd<2>;
  .reg .b32 %r<2>;
  mov.u64 %rd1, 16;
  mov.u32 %r1, 7;
  st.global.u32 [%rd1], %r1;
  ret;
}
"""
def work(name, ctx):
    ck(f"{name} push", cu.cuCtxPushCurrent_v2(ctx))
    p = ctypes.c_uint64()
    ck(f"{name} alloc", cu.cuMemAlloc_v2(ctypes.byref(p), ctypes.c_size_t(4)))
    ck(f"{name} memset", cu.cuMemsetD8_v2(p, ctypes.c_ubyte(1), ctypes.c_size_t(4)))
    r = ck(f"{name} sync", cu.cuCtxSynchronize())
    pop = CUctx(); cu.cuCtxPopCurrent_v2(ctypes.byref(pop))
    return r
work("B before", b)
ck("push A", cu.cuCtxPushCurrent_v2(a))
mod = ctypes.c_void_p()
ck("load", cu.cuModuleLoadData(ctypes.byref(mod), ctypes.c_char_p(ptx)))
fn = ctypes.c_void_p()
ck("getfn", cu.cuModuleGetFunction(ctypes.byref(fn), mod, b"wild"))
arg = ctypes.c_uint64(0)
args = (ctypes.c_void_p * 1)(ctypes.cast(ctypes.byref(arg), ctypes.c_void_p))
ck("launch", cu.cuLaunchKernel(fn, 1,1,1, 32,1,1, 0, None, args, None))
ck("A sync (fault expected: 700)", cu.cuCtxSynchronize())
pop = CUctx(); cu.cuCtxPopCurrent_v2(ctypes.byref(pop))
import time; time.sleep(0.5)
work("B after", b)
work("primary after", prim)
c = CUctx()
ck("create C after", create(ctypes.byref(c), 0, dev))
work("C new", c)
work("A again", a)
# While this (faulted) process lives, does another process compute?
import subprocess
other = subprocess.run([sys.executable, "-c", """
import ctypes
cu = ctypes.CDLL("libcuda.so.1")
print("other init", cu.cuInit(0))
d = ctypes.c_int(); cu.cuDeviceGet(ctypes.byref(d), 0)
c = ctypes.c_void_p(); print("other create", cu.cuCtxCreate_v2(ctypes.byref(c), 0, d))
p = ctypes.c_uint64(); print("other alloc", cu.cuMemAlloc_v2(ctypes.byref(p), ctypes.c_size_t(4)))
print("other memset", cu.cuMemsetD8_v2(p, ctypes.c_ubyte(1), ctypes.c_size_t(4)))
print("other sync", cu.cuCtxSynchronize())
"""], capture_output=True, text=True)
print(other.stdout, other.stderr)

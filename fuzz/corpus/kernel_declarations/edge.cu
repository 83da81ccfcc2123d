// @kernel k(a: f32[n*m], n: u32, m: u32)
// @kernel z()
// @kernel bad(x: q8[n])

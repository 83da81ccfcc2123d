//! Runtime dispatch of plain loops to the widest vector instructions the CPU
//! has. The host is built for baseline x86-64; [`multiversion!`] compiles a
//! loop body three times — AVX-512, AVX2+FMA and baseline — and picks one
//! per call. The compiler vectorizes the same scalar code each time, and
//! Rust never fuses a multiply and an add on its own, so every variant gives
//! bit-identical results.

/// Defines `fn $name(args)` whose body is compiled for AVX-512F, AVX2+FMA
/// and the baseline, chosen at run time. Functions the body calls should be
/// `#[inline(always)]` so they are compiled into each variant.
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $t:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $t),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                fn wide($($arg: $t),*) $body
                #[target_feature(enable = "avx2,fma")]
                fn narrow($($arg: $t),*) $body
                if std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512vl")
                {
                    // SAFETY: the CPU has the features `wide` is compiled for.
                    return unsafe { wide($($arg),*) };
                }
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU has the features `narrow` is compiled for.
                    return unsafe { narrow($($arg),*) };
                }
            }
            $body
        }
    };
}
pub(crate) use multiversion;

//! `decode-attention` on the CPU (f32; other float dtypes are converted by
//! the caller): the caches copied with each row's new key and value
//! written, then one softmax-weighted sum per (row, query head), in
//! parallel over rows and heads. The written key is rounded to the caches'
//! dtype before it is attended over, as the GPU's kernel (which writes the
//! cache, then reads it) does.

use super::math::{rope_table, rotate};
use crate::tensor::DType;
use crate::tensor::backend::DecodeAttention;
use rayon::prelude::*;

/// `x` as a cache of `dtype` holds it.
fn stored(dtype: DType, x: f32) -> f32 {
    match dtype {
        DType::F16 => half::f16::from_f32(x).to_f32(),
        DType::BF16 => half::bf16::from_f32(x).to_f32(),
        _ => x,
    }
}

/// Attended values [rows, heads · dim] and the updated caches.
pub fn decode_attention(
    a: &DecodeAttention<'_>,
    [q, k, v]: [&[f32]; 3],
    keys: &[f32],
    values: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (hq, hk, cap, d) = (a.heads, a.kv_heads, a.capacity, a.dim);
    // Row strides and first columns of the operands (packed or not).
    let (qs, qa) = (a.q.stride(), a.q.at);
    let (ks, ka, vs, va) = (a.k.stride(), a.k.at, a.v.stride(), a.v.at);
    let half = d / 2;
    let positions: Vec<usize> = a.args.positions.iter().map(|&p| p as usize).collect();
    let (cos, sin) = rope_table(&positions, d, a.args.theta);
    let angles = |r: usize| {
        (
            &cos[r * half..(r + 1) * half],
            &sin[r * half..(r + 1) * half],
        )
    };
    let (mut keys, mut values) = (keys.to_vec(), values.to_vec());
    for (r, &p) in positions.iter().enumerate() {
        let (c, s) = angles(r);
        for h in 0..hk {
            let at = ((r * hk + h) * cap + p) * d;
            let (new, new_v) = (ks * r + ka + h * d, vs * r + va + h * d);
            keys[at..at + d].copy_from_slice(&k[new..new + d]);
            rotate(&mut keys[at..at + d], c, s, a.args.layout);
            let dtype = a.args.keys.dtype();
            keys[at..at + d]
                .iter_mut()
                .for_each(|x| *x = stored(dtype, *x));
            values[at..at + d].copy_from_slice(&v[new_v..new_v + d]);
        }
    }
    let mut out = vec![0.0f32; a.rows * hq * d];
    let group = hq / hk;
    out.par_chunks_mut(d.max(1))
        .enumerate()
        .for_each(|(row, o)| {
            let (r, h) = (row / hq, row % hq);
            let (c, s) = angles(r);
            let from = qs * r + qa + h * d;
            let mut query = q[from..from + d].to_vec();
            rotate(&mut query, c, s, a.args.layout);
            let base = (r * hk + h / group) * cap * d;
            let seen = positions[r] + 1;
            let mut scores: Vec<f32> = (0..seen)
                .map(|j| {
                    let key = &keys[base + j * d..base + (j + 1) * d];
                    query.iter().zip(key).map(|(x, y)| x * y).sum::<f32>() * a.args.scale
                })
                .collect();
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0f32;
            for sc in &mut scores {
                *sc = (*sc - max).exp();
                sum += *sc;
            }
            for (j, p) in scores.iter().enumerate() {
                let value = &values[base + j * d..base + (j + 1) * d];
                for (o, x) in o.iter_mut().zip(value) {
                    *o += p * x;
                }
            }
            let inv = 1.0 / sum;
            o.iter_mut().for_each(|x| *x *= inv);
        });
    (out, keys, values)
}

//! Picking the next token: greedy on the host, or temperature and top-p
//! sampling from a seeded generator in the guest.

use tensorwasm_sdk::Tensor;

/// How tokens are picked.
pub struct Sampler {
    temperature: f32,
    top_p: f32,
    state: u64,
}

impl Sampler {
    /// A sampler; `seed` fixes the draws.
    pub fn new(temperature: f32, top_p: f32, seed: u64) -> Self {
        Self {
            temperature,
            top_p,
            state: seed,
        }
    }

    /// Whether this sampler picks the most likely token.
    pub fn greedy(&self) -> bool {
        self.temperature <= 0.0
    }

    /// The next token from `logits` [1, vocab].
    pub fn pick(&mut self, logits: &Tensor) -> tensorwasm_sdk::Result<u32> {
        if self.greedy() {
            let bytes = logits.argmax(-1)?.to_bytes()?;
            let id = i64::from_le_bytes(bytes[..8].try_into().expect("an i64 id"));
            return Ok(id as u32);
        }
        let logits = logits.to_f32()?;
        Ok(self.draw(&logits))
    }

    /// Draws from softmax(logits / temperature), cut to the top-p nucleus.
    fn draw(&mut self, logits: &[f32]) -> u32 {
        let t = f64::from(self.temperature);
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut probs: Vec<(u32, f64)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, (f64::from(l - max) / t).exp()))
            .collect();
        let total: f64 = probs.iter().map(|p| p.1).sum();
        probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut kept = 0.0;
        let mut cut = probs.len();
        for (n, p) in probs.iter().enumerate() {
            kept += p.1 / total;
            if kept >= f64::from(self.top_p) {
                cut = n + 1;
                break;
            }
        }
        let nucleus = &probs[..cut];
        let mass: f64 = nucleus.iter().map(|p| p.1).sum();
        let mut r = self.uniform() * mass;
        for &(id, p) in nucleus {
            if r < p {
                return id;
            }
            r -= p;
        }
        nucleus.last().map_or(0, |p| p.0)
    }

    /// A uniform draw in [0, 1) (splitmix64).
    fn uniform(&mut self) -> f64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Text released so far and what to hold back: a stop sequence's possible
/// beginning, or an unfinished UTF-8 character.
pub struct StopScan<'a> {
    stops: &'a [String],
}

/// What the text generated so far allows.
pub enum Scan {
    /// Release text up to this byte offset.
    Release(usize),
    /// A stop sequence starts at this byte offset: release up to it and end.
    Stop(usize),
}

impl<'a> StopScan<'a> {
    /// A scanner for `stops`.
    pub fn new(stops: &'a [String]) -> Self {
        Self { stops }
    }

    /// Scans `text` (all text generated so far; `from` bytes were released).
    pub fn scan(&self, text: &str, from: usize) -> Scan {
        let from = floor_boundary(text, from.saturating_sub(self.longest()));
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| text[from..].find(s.as_str()).map(|i| from + i))
            .min()
        {
            return Scan::Stop(at);
        }
        let mut end = text.len();
        if text.ends_with('\u{fffd}') {
            end -= '\u{fffd}'.len_utf8();
        }
        let held = self
            .stops
            .iter()
            .flat_map(|s| {
                (1..s.len())
                    .filter(move |&n| s.is_char_boundary(n))
                    .map(move |n| &s[..n])
            })
            .filter(|prefix| text[..end].ends_with(prefix))
            .map(str::len)
            .max()
            .unwrap_or(0);
        Scan::Release(end - held)
    }

    fn longest(&self) -> usize {
        self.stops.iter().map(String::len).max().unwrap_or(0)
    }
}

fn floor_boundary(text: &str, mut i: usize) -> usize {
    i = i.min(text.len());
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

//! `calc`: typed exports for `tensor-wasm run --invoke` (and its tests):
//! `add`, `greet`, `summarize`, `boom`, which panics, and `spin`, which
//! never returns.

wit_bindgen::generate!({ world: "calc", path: "wit" });

struct Calc;

impl Guest for Calc {
    fn add(a: i32, b: i32) -> Result<i32, String> {
        a.checked_add(b)
            .ok_or_else(|| format!("{a} + {b} overflows s32"))
    }

    fn greet(name: String, excited: Option<bool>) -> String {
        let end = if excited == Some(true) { "!" } else { "." };
        format!("Hello, {name}{end}")
    }

    fn summarize(xs: Vec<f64>, label: Option<String>) -> Summary {
        let count = xs.len() as u32;
        let mean = if xs.is_empty() {
            0.0
        } else {
            xs.iter().sum::<f64>() / xs.len() as f64
        };
        Summary { count, mean, label }
    }

    fn boom() {
        panic!("boom, as asked");
    }

    fn spin(lines: u32) {
        for i in 0..lines {
            println!("line {i}");
        }
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
}

export!(Calc);

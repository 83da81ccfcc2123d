//! Host types behind the `wasi:cuda` resources. Without a CUDA backend none
//! can be constructed, so they carry no state.

/// A device buffer.
#[derive(Debug)]
pub struct Buffer {
    _never: (),
}

/// A stream.
#[derive(Debug)]
pub struct Stream {
    _never: (),
}

/// An event.
#[derive(Debug)]
pub struct Event {
    _never: (),
}

/// A loaded module.
#[derive(Debug)]
pub struct Module {
    _never: (),
}

/// A kernel with its declared signature.
#[derive(Debug)]
pub struct Kernel {
    _never: (),
}

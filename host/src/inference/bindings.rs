//! Generated bindings: the per-request interfaces of
//! `tensorwasm:inference@0.1.0` the host serves to a deployment's components
//! ([`serve`]), and the batched model worlds of 0.2.0 it calls
//! ([`embedder`], [`generator`]).

/// `tensorwasm:inference/{embeddings,generation}@0.1.0`, as host imports.
pub mod serve {
    wasmtime::component::bindgen!({
        inline: "
            package tensorwasm:host;
            world inference-imports {
                import tensorwasm:inference/embeddings@0.1.0;
                import tensorwasm:inference/generation@0.1.0;
            }
        ",
        path: ["../wit/tensor-0.1.0", "../wit/inference-0.1.0"],
        world: "tensorwasm:host/inference-imports",
        imports: { default: async | trappable },
        with: {
            "tensorwasm:inference/generation.completion": crate::inference::generate::Completion,
        },
    });
}

/// `tensorwasm:inference/batch-embedding-model@0.2.0`, called by the host.
pub mod embedder {
    wasmtime::component::bindgen!({
        path: "../wit/inference-0.2.0",
        world: "tensorwasm:inference/batch-embedding-model",
        exports: { default: async },
    });
}

/// `tensorwasm:inference/batch-generation-model@0.2.0`, called by the host.
pub mod generator {
    wasmtime::component::bindgen!({
        path: "../wit/inference-0.2.0",
        world: "tensorwasm:inference/batch-generation-model",
        exports: { default: async },
    });
}

//! End-to-end tests: a real `tensor-wasm` process serving real components
//! (built from `components/`) over real HTTP on 127.0.0.1.

mod support;

mod admin_api;
mod bad_input;
mod batching;
mod connections;
mod cuda;
mod deployments;
mod gateway;
mod gpus;
mod hello;
mod hostile;
mod invoke;
mod jobs;
mod kernels;
mod keyvalue;
mod lifecycle;
mod live;
mod logging;
mod observability;
mod oci;
mod openai;
mod openapi;
mod preinit;
mod reference;
mod registry;
mod replicas;
mod reuse;
mod tensor_guests;
mod tensor_ops;
mod tls;
mod traces;

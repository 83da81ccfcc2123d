//! A request's path through the host: the listener accepts it
//! ([`listener`]) within its [`connections`] limits, over [`tls`] when
//! configured, the [`router`] picks its deployment, the
//! [`deployment`] runs a guest for it ([`guest`]) under the tenant's limits,
//! in a fresh instance or a warm one ([`instances`]), and its [`body`]
//! streams back with a [`request_id`]; between requests a serving thread
//! polls briefly before it sleeps ([`spin`]). Beside it, the [`admin`] listener
//! and its [`admin_api`] (with [`admin_tokens`]) and [`jobs_api`].

pub mod admin;
pub mod admin_api;
pub mod admin_tokens;
pub mod body;
pub mod connections;
pub mod deployment;
pub mod guest;
pub mod instances;
pub mod jobs_api;
pub mod listener;
pub mod request_id;
pub mod router;
pub mod spin;
pub mod tls;

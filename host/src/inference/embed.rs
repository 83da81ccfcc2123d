//! The embeddings batcher: requests that arrive together (while the last
//! batch ran, or within the deployment's `window`) are embedded by one
//! `embed-batch` call on the deployment's model instance, and each request
//! gets its own result back.

use super::BatchSeries;
use super::bindings::embedder::BatchEmbeddingModel;
use super::bindings::embedder::BatchEmbeddingModelPre;
use super::bindings::embedder::exports::tensorwasm::inference::batch_embeddings::{
    EmbedRequest, EmbeddingBatch,
};
use super::bindings::embedder::tensorwasm::inference::types::{Error, ModelInfo};
use super::model::{Exports, Model, Recipe, start};
use crate::assembly::capabilities::InstanceState;
use anyhow::Result;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use wasmtime::Store;
use wasmtime::component::InstancePre;

impl Exports for BatchEmbeddingModel {
    type Info = ModelInfo;
    type Pre = BatchEmbeddingModelPre<InstanceState>;

    fn pre(pre: InstancePre<InstanceState>) -> Result<Self::Pre> {
        Ok(BatchEmbeddingModelPre::new(pre)?)
    }

    async fn instantiate(pre: &Self::Pre, store: &mut Store<InstanceState>) -> Result<Self> {
        Ok(pre.instantiate_async(store).await?)
    }

    async fn models(&self, store: &mut Store<InstanceState>) -> wasmtime::Result<Vec<ModelInfo>> {
        self.tensorwasm_inference_batch_embeddings()
            .call_models(store)
            .await
    }
}

/// Where one request's result goes.
type Reply = oneshot::Sender<Result<EmbeddingBatch, Error>>;

/// One request waiting for its vectors.
struct Job {
    request: EmbedRequest,
    reply: Reply,
}

/// How batches are formed.
pub struct Batching {
    /// Requests per call, at most.
    pub max_batch: usize,
    /// How long a batch waits for more after its first request.
    pub window: Duration,
    /// Requests per call and each call's time, observed.
    pub series: BatchSeries,
}

/// A deployment's embedding model, batched.
pub struct Embedder {
    jobs: mpsc::UnboundedSender<Job>,
    models: Vec<ModelInfo>,
}

impl Embedder {
    /// Starts the model's instance on its own thread; returns once it is up
    /// and has listed its models.
    pub fn start(
        name: String,
        recipe: Recipe<BatchEmbeddingModel>,
        batching: Batching,
    ) -> Result<Self> {
        let (jobs, rx) = mpsc::unbounded_channel();
        let models = start(name, recipe, move |model| serve(model, rx, batching))?;
        Ok(Self { jobs, models })
    }

    /// The models the component serves.
    pub fn models(&self) -> &[ModelInfo] {
        &self.models
    }

    /// Embeds one request's inputs, in a batch with whatever else arrives.
    pub async fn embed(&self, request: EmbedRequest) -> Result<EmbeddingBatch, Error> {
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send(Job { request, reply })
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

fn stopped() -> Error {
    Error::Backend("the embedding model's instance has stopped".into())
}

/// Forms batches and runs them until every sender is gone.
async fn serve(
    mut model: Model<BatchEmbeddingModel>,
    mut rx: mpsc::UnboundedReceiver<Job>,
    batching: Batching,
) {
    while let Some(first) = rx.recv().await {
        let mut jobs = gather(first, &mut rx, &batching).await;
        jobs.retain(|j| !j.reply.is_closed());
        if jobs.is_empty() {
            continue;
        }
        let (started, size) = (Instant::now(), jobs.len());
        let (requests, replies): (Vec<EmbedRequest>, Vec<Reply>) =
            jobs.into_iter().map(|j| (j.request, j.reply)).unzip();
        let (exports, store) = model.call();
        let results = exports
            .tensorwasm_inference_batch_embeddings()
            .call_embed_batch(store, &requests)
            .await;
        batching.series.observe(size, started);
        match results {
            Ok(results) if results.len() == replies.len() => {
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(result);
                }
            }
            Ok(results) => fail(
                replies,
                format!(
                    "the model answered {} of {} requests",
                    results.len(),
                    requests.len()
                ),
            ),
            Err(trap) => {
                tracing::warn!("embedding model trapped; starting a new instance: {trap:#}");
                fail(replies, format!("the embedding model failed: {trap:#}"));
                if let Err(e) = model.renew().await {
                    tracing::error!("cannot restart the embedding model: {e:#}");
                    return;
                }
            }
        }
    }
}

/// `first` and the jobs that follow it within the batching window.
async fn gather(first: Job, rx: &mut mpsc::UnboundedReceiver<Job>, b: &Batching) -> Vec<Job> {
    let mut jobs = vec![first];
    let until = tokio::time::Instant::now() + b.window;
    while jobs.len() < b.max_batch {
        match rx.try_recv() {
            Ok(j) => jobs.push(j),
            Err(_) if b.window.is_zero() => break,
            Err(_) => match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(j)) => jobs.push(j),
                _ => break,
            },
        }
    }
    jobs
}

fn fail(replies: Vec<Reply>, message: String) {
    for reply in replies {
        let _ = reply.send(Err(Error::Backend(message.clone())));
    }
}

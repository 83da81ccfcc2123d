//! The generation batcher (continuous batching): each request's `start`
//! admits a sequence into the deployment's model instance (its prompt read
//! between two steps), every `step` decodes one token for all admitted
//! sequences together, and each token's text goes to its request's
//! [`Completion`]. A sequence leaves when it ends or its request is gone
//! (client disconnected, deadline passed: the completion is dropped).

use super::BatchSeries;
use super::bindings::generator::BatchGenerationModel;
use super::bindings::generator::BatchGenerationModelPre;
use super::bindings::generator::exports::tensorwasm::inference::batch_generation::{
    FinishReason, Prompt, Sampling, TokenEvent, Usage,
};
use super::bindings::generator::tensorwasm::inference::types::{Error, ModelInfo};
use super::model::{Exports, Model, Recipe, start};
use crate::assembly::capabilities::InstanceState;
use anyhow::Result;
use prometheus_client::metrics::gauge::Gauge;
use std::collections::{HashMap, VecDeque};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};
use wasmtime::Store;
use wasmtime::component::InstancePre;

impl Exports for BatchGenerationModel {
    type Info = ModelInfo;
    type Pre = BatchGenerationModelPre<InstanceState>;

    fn pre(pre: InstancePre<InstanceState>) -> Result<Self::Pre> {
        Ok(BatchGenerationModelPre::new(pre)?)
    }

    async fn instantiate(pre: &Self::Pre, store: &mut Store<InstanceState>) -> Result<Self> {
        Ok(pre.instantiate_async(store).await?)
    }

    async fn models(&self, store: &mut Store<InstanceState>) -> wasmtime::Result<Vec<ModelInfo>> {
        self.tensorwasm_inference_batch_generation()
            .call_models(store)
            .await
    }
}

/// What a sequence's request hears from the batcher.
enum Event {
    /// One step's output.
    Token(TokenEvent),
    /// The sequence failed (with the rest of its batch).
    Failed(Error),
}

/// A request's sequence, as admitted.
struct Admitted {
    id: u32,
    events: mpsc::UnboundedReceiver<Event>,
}

enum Job {
    Admit {
        model: String,
        prompt: Prompt,
        options: Sampling,
        reply: oneshot::Sender<Result<Admitted, Error>>,
    },
    Release(u32),
}

/// A deployment's generative model, batched.
pub struct Generator {
    jobs: mpsc::UnboundedSender<Job>,
    models: Vec<ModelInfo>,
}

impl Generator {
    /// Starts the model's instance on its own thread, decoding up to
    /// `max_batch` sequences together; returns once it is up.
    pub fn start(
        name: String,
        recipe: Recipe<BatchGenerationModel>,
        max_batch: usize,
        (series, sequences): (BatchSeries, Gauge),
    ) -> Result<Self> {
        let (jobs, rx) = mpsc::unbounded_channel();
        let batcher = move |model| {
            Batcher {
                model,
                max_batch,
                series,
                sequences,
                active: HashMap::new(),
                waiting: VecDeque::new(),
            }
            .serve(rx)
        };
        let models = start(name, recipe, batcher)?;
        Ok(Self { jobs, models })
    }

    /// The models the component serves.
    pub fn models(&self) -> &[ModelInfo] {
        &self.models
    }

    /// Admits a sequence; its prompt has been read when this returns.
    pub async fn start_completion(
        &self,
        model: String,
        prompt: Prompt,
        options: Sampling,
    ) -> Result<Completion, Error> {
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send(Job::Admit {
                model,
                prompt,
                options,
                reply,
            })
            .map_err(|_| stopped())?;
        let admitted = rx.await.map_err(|_| stopped())??;
        Ok(Completion {
            id: admitted.id,
            events: admitted.events,
            jobs: self.jobs.clone(),
            finish: None,
            usage: Usage {
                prompt_tokens: 0,
                completion_tokens: 0,
            },
        })
    }
}

fn stopped() -> Error {
    Error::Backend("the generative model's instance has stopped".into())
}

/// A request's completion (the `completion` resource): the text of its
/// sequence, one step at a time. Dropping it takes the sequence out of the
/// batch.
pub struct Completion {
    id: u32,
    events: mpsc::UnboundedReceiver<Event>,
    jobs: mpsc::UnboundedSender<Job>,
    /// Set once the sequence ended.
    pub finish: Option<FinishReason>,
    /// Token counts so far.
    pub usage: Usage,
}

impl Completion {
    /// The next piece of text; `None` once the sequence has ended.
    pub async fn next(&mut self) -> Result<Option<String>, Error> {
        while self.finish.is_none() {
            match self.events.recv().await {
                Some(Event::Token(t)) => {
                    self.usage = t.usage;
                    self.finish = t.finish;
                    if !t.text.is_empty() {
                        return Ok(Some(t.text));
                    }
                }
                Some(Event::Failed(e)) => return Err(e),
                None => return Err(stopped()),
            }
        }
        Ok(None)
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if self.finish.is_none() {
            let _ = self.jobs.send(Job::Release(self.id));
        }
    }
}

/// The batcher's state, on the model's thread.
struct Batcher {
    model: Model<BatchGenerationModel>,
    max_batch: usize,
    /// Sequences per step and each step's time.
    series: BatchSeries,
    /// Reports `active.len()`.
    sequences: Gauge,
    /// Sequences in the batch, by id.
    active: HashMap<u32, mpsc::UnboundedSender<Event>>,
    /// Admissions waiting for room in the batch.
    waiting: VecDeque<Job>,
}

impl Batcher {
    /// Admits and steps until every sender is gone.
    async fn serve(mut self, mut rx: mpsc::UnboundedReceiver<Job>) {
        loop {
            if self.active.is_empty() && self.waiting.is_empty() {
                match rx.recv().await {
                    Some(job) => self.take(job).await,
                    None => return,
                }
            }
            while let Ok(job) = rx.try_recv() {
                self.take(job).await;
            }
            let running = self.admit().await && self.step().await;
            self.sequences.set(self.active.len() as i64);
            if !running {
                return;
            }
        }
    }

    /// Queues an admission, or releases a sequence.
    async fn take(&mut self, job: Job) {
        match job {
            Job::Release(id) => {
                if self.active.remove(&id).is_some() {
                    let (exports, store) = self.model.call();
                    let g = exports.tensorwasm_inference_batch_generation();
                    if let Err(e) = g.call_release(store, id).await {
                        self.trapped(e).await;
                    }
                }
            }
            admit @ Job::Admit { .. } => self.waiting.push_back(admit),
        }
    }

    /// Admits waiting sequences while the batch has room (false: the model
    /// could not be restarted).
    async fn admit(&mut self) -> bool {
        while self.active.len() < self.max_batch {
            let Some(Job::Admit {
                model,
                prompt,
                options,
                reply,
            }) = self.waiting.pop_front()
            else {
                break;
            };
            if reply.is_closed() {
                continue;
            }
            let (exports, store) = self.model.call();
            let g = exports.tensorwasm_inference_batch_generation();
            match g.call_admit(store, &model, &prompt, &options).await {
                Ok(Ok(id)) => {
                    let (tx, events) = mpsc::unbounded_channel();
                    self.active.insert(id, tx);
                    // If the request is gone already, its receiver is
                    // dropped with the reply and the next step releases it.
                    let _ = reply.send(Ok(Admitted { id, events }));
                }
                Ok(Err(e)) => drop(reply.send(Err(e))),
                Err(trap) => {
                    let _ = reply.send(Err(Error::Backend(format!("the model failed: {trap:#}"))));
                    if !self.trapped(trap).await {
                        return false;
                    }
                }
            }
        }
        true
    }

    /// One token for every sequence (false: the model could not be restarted).
    async fn step(&mut self) -> bool {
        let gone: Vec<u32> = self
            .active
            .iter()
            .filter(|(_, tx)| tx.is_closed())
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            self.take(Job::Release(id)).await;
        }
        if self.active.is_empty() {
            return true;
        }
        let (started, size) = (Instant::now(), self.active.len());
        let (exports, store) = self.model.call();
        let stepped = exports
            .tensorwasm_inference_batch_generation()
            .call_step(store)
            .await;
        self.series.observe(size, started);
        match stepped {
            Ok(Ok(events)) => {
                for event in events {
                    let ended = event.finish.is_some();
                    let id = event.sequence;
                    if let Some(tx) = self.active.get(&id) {
                        let _ = tx.send(Event::Token(event));
                    }
                    if ended {
                        self.active.remove(&id);
                    }
                }
                true
            }
            Ok(Err(e)) => {
                // The component dropped its batch: every sequence fails.
                self.fail_all(e);
                true
            }
            Err(trap) => self.trapped(trap).await,
        }
    }

    fn fail_all(&mut self, e: Error) {
        for (_, tx) in self.active.drain() {
            let _ = tx.send(Event::Failed(e.clone()));
        }
    }

    /// After a trap: every sequence fails and a new instance replaces the
    /// old (false if it cannot be made).
    async fn trapped(&mut self, trap: wasmtime::Error) -> bool {
        tracing::warn!("generative model trapped; starting a new instance: {trap:#}");
        self.fail_all(Error::Backend(format!("the model failed: {trap:#}")));
        match self.model.renew().await {
            Ok(()) => true,
            Err(e) => {
                tracing::error!("cannot restart the generative model: {e:#}");
                for job in self.waiting.drain(..) {
                    if let Job::Admit { reply, .. } = job {
                        let _ = reply.send(Err(stopped()));
                    }
                }
                false
            }
        }
    }
}

//! Provisioning through the API (reqwest, JSON; not on the hot path):
//! agents, threads and WebSocket grants.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};

/// An agent and the key of its account.
#[derive(Debug, Clone)]
pub struct Cred {
    pub aid: String,
    pub key: String,
}

/// A thread and its two agents (indexes into the agent list).
pub struct ThreadPlan {
    pub id: String,
    pub creator: usize,
    pub target: usize,
}

/// The JSON client used to set a scenario up.
#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
}

impl Api {
    pub fn new(base: &str) -> Result<Api, String> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        Ok(Api {
            http,
            base: base.trim_end_matches('/').to_owned(),
        })
    }

    async fn send(&self, req: reqwest::RequestBuilder, what: &str) -> Result<Value, String> {
        let res = req.send().await.map_err(|e| format!("{what}: {e}"))?;
        let status = res.status();
        let text = res.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(format!("{what}: HTTP {status}: {text}"));
        }
        serde_json::from_str(&text).map_err(|e| format!("{what}: unreadable JSON: {e}"))
    }

    pub async fn post(&self, key: &str, path: &str, body: &Value) -> Result<Value, String> {
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(key)
            .json(body);
        self.send(req, &format!("POST {path}")).await
    }

    pub async fn get(&self, key: &str, path: &str) -> Result<Value, String> {
        let req = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(key);
        let what = format!("GET {}", path.split('?').next().unwrap_or(path));
        self.send(req, &what).await
    }

    /// Registers `n` agents, each with its own account and key.
    pub async fn register(&self, n: usize, label: &str) -> Result<Vec<Cred>, String> {
        let url = format!("{}/api/acsp/agent-init", self.base);
        let results: Vec<Result<Cred, String>> = futures_util::stream::iter(0..n)
            .map(|i| {
                let body = json!({"agent_name": format!("loadgen-{label}-{i}"), "capabilities": []});
                let req = self.http.post(&url).json(&body);
                async move {
                    let v = self.send(req, "POST /api/acsp/agent-init").await.map_err(|e| {
                        if e.contains("403") {
                            format!("{e}\n  hint: start the server with --open-registration")
                        } else if e.contains("429") {
                            format!("{e}\n  hint: start the server with --registration-rate-limit-per-minute 0")
                        } else {
                            e
                        }
                    })?;
                    Ok(Cred {
                        aid: str_field(&v, "aid")?,
                        key: str_field(&v, "login_key")?,
                    })
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// Creates `n` threads; thread i is between agent i and agent i+1.
    pub async fn create_threads(
        &self,
        agents: &[Cred],
        n: usize,
        label: &str,
    ) -> Result<Vec<ThreadPlan>, String> {
        let results: Vec<Result<ThreadPlan, String>> = futures_util::stream::iter(0..n)
            .map(|i| {
                let (creator, target) = (i % agents.len(), (i + 1) % agents.len());
                let body = json!({
                    "aid": agents[creator].aid, "target_aid": agents[target].aid,
                    "subject": format!("loadgen {label} {i}"),
                });
                async move {
                    let v = self
                        .post(&agents[creator].key, "/api/acsp/thread/create", &body)
                        .await?;
                    Ok(ThreadPlan {
                        id: str_field(&v["thread"], "id")?,
                        creator,
                        target,
                    })
                }
            })
            .buffered(32)
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// A fresh single-use WebSocket grant for `thread_id`: its connect URL.
    pub async fn grant(&self, key: &str, thread_id: &str) -> Result<String, String> {
        let body = json!({"thread_id": thread_id});
        let v = self
            .post(key, "/v1/turn-taking/actions/open_thread", &body)
            .await?;
        str_field(&v["realtime"], "connect_url")
    }
}

fn str_field(v: &Value, name: &str) -> Result<String, String> {
    v[name]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("the answer has no string `{name}`: {v}"))
}

//! Webhooks: a consumer of the event log that POSTs each account's thread
//! events to the endpoints it registered, signed (`sign`), at least once,
//! in log order per endpoint.
//!
//! One task per endpoint reads the log from the endpoint's stored cursor
//! (`store::webhooks`), delivers one event at a time and moves the cursor
//! only after a 2xx, so a restart, a crash or a dead receiver loses
//! nothing (a crash between the 2xx and the cursor's commit repeats that
//! one event, with the same id). A failure waits out the retry schedule
//! (`--webhook-retry-schedule`); an endpoint failing it all is disabled.
//! The store's commit reports only wake the tasks ([`CommitWake`]): the
//! events themselves are read back from the log. Posting never waits on a
//! receiver, and a slow receiver holds up only its own endpoint (at most
//! [`MAX_IN_FLIGHT`] requests run at once, each for at most 10 s, and at
//! most [`MAX_IN_FLIGHT_PER_ACCOUNT`] of them for one account's endpoints,
//! so one account's slow receivers cannot hold every slot).

pub mod sign;
pub mod target;
mod worker;

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify, Semaphore};

use crate::events::{CommitListener, Committed};
use crate::store::db::webhooks;
use crate::store::Store;

/// Requests to receivers that may run at once, over all endpoints.
pub const MAX_IN_FLIGHT: usize = 64;
/// Of those, how many one account's endpoints may run at once: its slow
/// receivers (each holding a slot up to [`DELIVERY_TIMEOUT`]) leave the
/// other accounts the rest.
pub const MAX_IN_FLIGHT_PER_ACCOUNT: usize = 8;
/// A receiver must answer within this.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the secret a rotation replaces keeps signing beside the new
/// one, unless the rotation says (`keep_previous_hours`, `webhook rotate
/// --keep-previous-hours`): time to give receivers the new secret.
pub const KEEP_PREVIOUS_HOURS_DEFAULT: i64 = 24;
/// The longest a rotation may keep the previous secret signing: a week (a
/// secret rotated because it leaked should not stay good for long).
pub const KEEP_PREVIOUS_HOURS_MAX: i64 = 168;

/// When the secret replaced by a rotation now stops signing, keeping it
/// `hours` (checked by the caller: 0 to [`KEEP_PREVIOUS_HOURS_MAX`]); `None`
/// for 0, when only the new secret signs.
pub fn previous_secret_until(hours: i64) -> Option<String> {
    (hours > 0)
        .then(|| crate::domain::format_time(chrono::Utc::now() + chrono::Duration::hours(hours)))
}

/// `keep_previous_hours` as given (`None`: the default), checked: `422` on
/// the field outside 0 to [`KEEP_PREVIOUS_HOURS_MAX`].
pub fn keep_previous_hours(given: Option<i64>) -> crate::error::ApiResult<i64> {
    let hours = given.unwrap_or(KEEP_PREVIOUS_HOURS_DEFAULT);
    if !(0..=KEEP_PREVIOUS_HOURS_MAX).contains(&hours) {
        return Err(crate::error::ApiError::field(
            "keep_previous_hours",
            format!(
                "keep_previous_hours must be from 0 (only the new secret signs) to \
                 {KEEP_PREVIOUS_HOURS_MAX} (a week)"
            ),
        ));
    }
    Ok(hours)
}
/// How often the table is re-read for endpoints made or changed by another
/// process (the command line).
const ROLL_CALL: Duration = Duration::from_secs(1);

/// The store's listener for webhooks: publishes "the log holds everything
/// up to P" and nothing else.
pub struct CommitWake {
    upto: watch::Sender<i64>,
}

impl CommitWake {
    /// The listener and the receiver its dispatcher waits on.
    pub fn new() -> (Arc<CommitWake>, watch::Receiver<i64>) {
        let (tx, rx) = watch::channel(0);
        (Arc::new(CommitWake { upto: tx }), rx)
    }
}

impl CommitListener for CommitWake {
    fn committed(&self, batch: Committed<'_>) {
        self.upto.send_replace(batch.upto);
    }
}

/// Settings of the delivery worker.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Delays between attempts; the endpoint is disabled after the last.
    pub schedule: Vec<Duration>,
    pub allow_private: bool,
    /// Extra CA certificates (PEM) for https targets.
    pub ca_file: Option<std::path::PathBuf>,
}

/// The endpoints' tasks, and what they share.
pub struct Dispatcher {
    store: Store,
    settings: Settings,
    client: reqwest::Client,
    permits: Semaphore,
    /// Each account's share of `permits` (see [`AccountSlots`]).
    account_permits: AccountSlots,
    commits: watch::Receiver<i64>,
    shutdown: watch::Receiver<bool>,
    tasks: Mutex<HashMap<String, Task>>,
    /// This node's name for delivery leases (several nodes on PostgreSQL).
    node: String,
}

/// A running endpoint task, as the dispatcher knows it.
struct Task {
    wake: Arc<Wake>,
    updated_at: String,
}

/// How the dispatcher tells a task its endpoint changed.
#[derive(Default)]
struct Wake {
    notify: Notify,
    /// Set with each notification, cleared by the task as it re-reads its
    /// endpoint: lets it stop between deliveries.
    dirty: AtomicBool,
}

impl Dispatcher {
    /// Starts the worker: a task per endpoint, and a roll call that starts
    /// tasks for endpoints made elsewhere. Stops when `shutdown` turns true.
    pub fn start(
        store: Store,
        settings: Settings,
        commits: watch::Receiver<i64>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Arc<Dispatcher>, String> {
        let mut client = reqwest::Client::builder();
        for ca in extra_roots(settings.ca_file.as_deref())? {
            client = client.add_root_certificate(ca);
        }
        let client = client
            // A redirect could lead anywhere, a private address included.
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would reach addresses the resolver refuses.
            .no_proxy()
            .dns_resolver(Arc::new(target::GuardedResolver {
                allow_private: settings.allow_private,
            }))
            .connect_timeout(DELIVERY_TIMEOUT)
            .user_agent(concat!("threadline-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the webhook HTTP client: {e}"))?;
        // On PostgreSQL the store's id, whose session shows the node is up.
        let node = store
            .node()
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        let dispatcher = Arc::new(Dispatcher {
            node,
            store,
            settings,
            client,
            permits: Semaphore::new(MAX_IN_FLIGHT),
            account_permits: AccountSlots::default(),
            commits,
            shutdown,
            tasks: Mutex::new(HashMap::new()),
        });
        tokio::spawn(dispatcher.clone().roll_call());
        Ok(dispatcher)
    }

    /// Whether private targets are allowed (for the API's checks).
    pub fn allow_private(&self) -> bool {
        self.settings.allow_private
    }

    /// An endpoint was made or changed here: start or wake its task now
    /// rather than at the next roll call.
    pub fn changed(self: &Arc<Self>, public_id: &str) {
        self.ensure(public_id, None);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Task>> {
        self.tasks
            .lock()
            .expect("expect: the task map lock is never held across a panic")
    }

    /// Starts the task of `public_id` if none runs; otherwise wakes it when
    /// `updated_at` is `None` (a change made here) or differs from what it
    /// last saw.
    fn ensure(self: &Arc<Self>, public_id: &str, updated_at: Option<&str>) {
        let mut tasks = self.lock();
        match tasks.get_mut(public_id) {
            Some(task) => {
                if updated_at.is_none_or(|u| u != task.updated_at) {
                    if let Some(u) = updated_at {
                        task.updated_at = u.to_owned();
                    }
                    task.wake.raise();
                }
            }
            None => {
                let wake = Arc::new(Wake::default());
                tasks.insert(
                    public_id.to_owned(),
                    Task {
                        wake: wake.clone(),
                        updated_at: updated_at.unwrap_or_default().to_owned(),
                    },
                );
                tokio::spawn(worker::run(self.clone(), public_id.to_owned(), wake));
            }
        }
    }

    /// Forgets a task that has ended (its endpoint is gone).
    fn ended(&self, public_id: &str) {
        self.lock().remove(public_id);
    }

    /// Every `ROLL_CALL`, starts tasks for endpoints without one and wakes
    /// those whose row changed or went (made, changed or deleted by the
    /// command line).
    async fn roll_call(self: Arc<Self>) {
        let mut shutdown = self.shutdown.clone();
        // A database that stays away is logged once, not every second.
        let mut failing = false;
        loop {
            let now = crate::domain::now();
            let read = self.store.read(move |c| {
                Ok((
                    webhooks::all(c)?,
                    webhooks::expired_previous_secrets(c, &now)?,
                ))
            });
            match read.await {
                Ok((all, expired)) => {
                    if std::mem::take(&mut failing) {
                        log::warn!("webhooks: endpoints listed again");
                    }
                    if expired {
                        self.forget_expired_secrets().await;
                    }
                    for (id, updated_at) in &all {
                        self.ensure(id, Some(updated_at));
                    }
                    // Deleted elsewhere: wake the task (waiting out a retry,
                    // maybe for hours) so it sees that and ends.
                    for (id, task) in self.lock().iter() {
                        if !all.iter().any(|(a, _)| a == id) {
                            task.wake.raise();
                        }
                    }
                }
                Err(e) if !failing => {
                    failing = true;
                    log::warn!("webhooks: cannot list endpoints (retrying every second): {e}");
                }
                Err(_) => {}
            }
            tokio::select! {
                () = tokio::time::sleep(ROLL_CALL) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    }
}

impl Dispatcher {
    /// Forgets the previous secrets whose rotation window has closed (they
    /// sign nothing and are shown nowhere after it: see
    /// `Endpoint::previous_secret_at`), so none stays stored past it for
    /// longer than a roll call. Called when the roll call's read found one.
    async fn forget_expired_secrets(&self) {
        let now = crate::domain::now();
        let forgot = self
            .store
            .write(move |ctx| webhooks::forget_expired_previous_secrets(ctx.conn, &now))
            .await;
        if let Err(e) = forgot {
            log::warn!("webhooks: cannot forget expired previous secrets: {e}");
        }
    }
}

/// Each account's semaphore of [`MAX_IN_FLIGHT_PER_ACCOUNT`] permits, made
/// on its first delivery and dropped when its last permit comes back.
#[derive(Default)]
struct AccountSlots {
    by_account: Mutex<HashMap<i64, Arc<Semaphore>>>,
}

/// A delivery's place in its account's share; given back on drop.
struct AccountPermit<'a> {
    slots: &'a AccountSlots,
    account: i64,
    semaphore: Arc<Semaphore>,
}

impl AccountSlots {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Arc<Semaphore>>> {
        // A panic while holding the lock cannot leave the map half-updated.
        self.by_account.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a place among `account`'s deliveries.
    async fn acquire(&self, account: i64) -> AccountPermit<'_> {
        let semaphore = self
            .lock()
            .entry(account)
            .or_insert_with(|| Arc::new(Semaphore::new(MAX_IN_FLIGHT_PER_ACCOUNT)))
            .clone();
        // The semaphore is never closed; the permit is forgotten and given
        // back by hand on drop, after which the map entry may go.
        if let Ok(permit) = semaphore.acquire().await {
            permit.forget();
        }
        AccountPermit {
            slots: self,
            account,
            semaphore,
        }
    }

    /// Accounts with a semaphore now (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

impl Drop for AccountPermit<'_> {
    fn drop(&mut self) {
        let mut map = self.slots.lock();
        self.semaphore.add_permits(1);
        // Nobody else holds or waits on it (the map and this are the only
        // handles) and every permit is back: forget the account.
        if Arc::strong_count(&self.semaphore) == 2
            && self.semaphore.available_permits() == MAX_IN_FLIGHT_PER_ACCOUNT
        {
            map.remove(&self.account);
        }
    }
}

impl Wake {
    fn raise(&self) {
        self.dirty.store(true, std::sync::atomic::Ordering::SeqCst);
        self.notify.notify_one();
    }
}

/// The CA certificates of `--webhook-ca-file`, each of which https targets
/// may chain to besides the built-in public roots. A file that cannot be
/// read or holds no certificate stops the server at start, saying which.
fn extra_roots(path: Option<&std::path::Path>) -> Result<Vec<reqwest::Certificate>, String> {
    let Some(path) = path else {
        return Ok(Vec::new());
    };
    let bad = |e: &dyn std::fmt::Display| format!("--webhook-ca-file {}: {e}", path.display());
    let pem = std::fs::read(path).map_err(|e| bad(&e))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(&e))?;
    if certs.is_empty() {
        return Err(bad(&"no PEM certificate in the file"));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    #[tokio::test]
    async fn an_account_gets_its_share_of_slots_and_is_forgotten_when_idle() {
        let slots = AccountSlots::default();
        let mut held = Vec::new();
        for _ in 0..MAX_IN_FLIGHT_PER_ACCOUNT {
            held.push(slots.acquire(1).await);
        }
        // Account 1 is at its share: another of its deliveries waits...
        assert!(slots.acquire(1).now_or_never().is_none());
        // ...while another account's does not.
        let other = slots.acquire(2).await;
        assert_eq!(slots.len(), 2);
        drop(other);
        assert_eq!(slots.len(), 1);
        held.pop();
        let again = slots.acquire(1).await;
        drop(again);
        drop(held);
        assert_eq!(slots.len(), 0);
    }
}

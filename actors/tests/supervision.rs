//! The supervision contract: a crashed child is restarted and counted, its siblings keep
//! running, and a supervisor whose budget is spent gives up.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ractor::Actor;
use vane_actors::control::Control;
use vane_actors::policy::RestartPolicy;
use vane_actors::service::{Guard, Service, ServiceActor, ServiceArgs, StartFuture};
use vane_actors::status::{ActorState, ActorTable};
use vane_actors::supervisor::{Supervisor, SupervisorArgs};

struct Counting(Arc<AtomicUsize>);

impl Service for Counting {
    fn start(&self) -> StartFuture {
        self.0.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Ok(Guard::new(())) })
    }
}

fn child(
    table: &ActorTable,
    name: &str,
    starts: Arc<AtomicUsize>,
) -> vane_actors::supervisor::ChildSpec {
    ServiceActor::child_spec(ServiceArgs {
        name: name.into(),
        parent: "root".into(),
        table: table.clone(),
        service: Arc::new(Counting(starts)),
    })
}

async fn wait_for(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..200 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test]
async fn panicking_child_restarts_and_sibling_is_untouched() {
    let table = ActorTable::new();
    let a = Arc::new(AtomicUsize::new(0));
    let b = Arc::new(AtomicUsize::new(0));
    let args = SupervisorArgs {
        name: "root".into(),
        parent: String::new(),
        table: table.clone(),
        policy: RestartPolicy::default(),
        children: vec![child(&table, "a", a.clone()), child(&table, "b", b.clone())],
        source: None,
    };
    let (root, handle) = Actor::spawn(None, Supervisor, args).await.expect("spawn");
    assert!(wait_for(|| table.get("a").is_some() && table.get("b").is_some()).await);
    assert!(table.control("a", Control::Panic));
    assert!(
        wait_for(|| a.load(Ordering::SeqCst) == 2
            && table.get("a").map(|r| r.status) == Some(ActorState::Running))
        .await,
        "a restarted"
    );
    assert_eq!(table.get("a").map(|r| r.restarts), Some(1));
    assert_eq!(b.load(Ordering::SeqCst), 1, "b was never restarted");
    assert_eq!(table.get("b").map(|r| r.restarts), Some(0));
    root.stop(None);
    let _ = handle.await;
}

#[tokio::test]
async fn exhausted_budget_stops_the_supervisor() {
    let table = ActorTable::new();
    let a = Arc::new(AtomicUsize::new(0));
    let args = SupervisorArgs {
        name: "root".into(),
        parent: String::new(),
        table: table.clone(),
        policy: RestartPolicy {
            max_restarts: 2,
            window: Duration::from_secs(60),
            base_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
        },
        children: vec![child(&table, "a", a.clone())],
        source: None,
    };
    let (_root, handle) = Actor::spawn(None, Supervisor, args).await.expect("spawn");
    for round in 1..=3 {
        assert!(
            wait_for(|| table.control("a", Control::Panic)).await,
            "round {round}: a reachable"
        );
        if round < 3 {
            assert!(wait_for(|| a.load(Ordering::SeqCst) == round + 1).await);
        }
    }
    let done = tokio::time::timeout(Duration::from_secs(2), handle).await;
    assert!(done.is_ok(), "root gave up after the third crash");
    assert_eq!(a.load(Ordering::SeqCst), 3, "no fourth start");
}

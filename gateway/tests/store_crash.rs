//! Crash safety of the file store against the real binary: a stream of writes (PUTs of a
//! VirtualService carrying a counter, plus creates and deletes) while the process is SIGKILLed at
//! pseudo-random moments (fixed-seed choices of which write and how long into it). After every restart on the same data dir the
//! loaded state must equal an acknowledged state: the last acknowledged write, or that plus the
//! one in flight when the process died. Never older, never torn (a torn file would not load).

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const VS: &str = "/apis/networking.istio.io/v1/namespaces/default/virtualservices";
const WRITES: usize = 200;
/// Stop early rather than run past a reasonable CI budget on a slow disk.
const BUDGET: Duration = Duration::from_secs(50);

/// Name → the host that encodes its version: what the API must show after a restart.
type Model = BTreeMap<String, String>;

#[derive(Debug, Clone)]
enum Op {
    Put { counter: u64 },
    Create { name: String },
    Delete { name: String },
}

fn vs(name: &str, host: &str) -> Value {
    json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
           "metadata": {"name": name},
           "spec": {"hosts": [host], "http": [{"route": [{"destination": {"host": "backend"}}]}]}})
}

fn counter_host(n: u64) -> String {
    format!("c{n}.example.com")
}

fn applied(model: &Model, op: &Op) -> Model {
    let mut m = model.clone();
    match op {
        Op::Put { counter } => {
            m.insert("counter".into(), counter_host(*counter));
        }
        Op::Create { name } => {
            m.insert(name.clone(), format!("{name}.example.com"));
        }
        Op::Delete { name } => {
            m.remove(name);
        }
    }
    m
}

/// Sends one write. `Ok(true)` acknowledged, `Ok(false)` no answer (the process died).
fn send(g: &Gateway, op: &Op) -> Result<bool, String> {
    let (method, path, body) = match op {
        Op::Put { counter } => (
            "PUT",
            format!("{VS}/counter"),
            vs("counter", &counter_host(*counter)).to_string(),
        ),
        Op::Create { name } => (
            "POST",
            VS.to_string(),
            vs(name, &format!("{name}.example.com")).to_string(),
        ),
        Op::Delete { name } => ("DELETE", format!("{VS}/{name}"), String::new()),
    };
    let headers: &[(&str, &str)] = if body.is_empty() {
        &[]
    } else {
        &[("Content-Type", "application/json")]
    };
    match request(g.admin, method, &path, headers, body.as_bytes()) {
        Ok(r) if (200..300).contains(&r.status) => Ok(true),
        Ok(r) => Err(format!("{method} {path}: {} {}", r.status, r.text())),
        Err(_) => Ok(false),
    }
}

fn observed(g: &Gateway) -> Model {
    let r = request(g.admin, "GET", VS, &[], b"").expect("list after restart");
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|i| {
            (
                i["metadata"]["name"].as_str().unwrap_or("?").to_string(),
                i["spec"]["hosts"][0].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect()
}

#[test]
fn sigkill_at_random_moments_never_loses_or_tears_an_acknowledged_write() {
    let started = Instant::now();
    let mut rng = Rng::new(0x5eed_c0ff_ee15_bad5);
    let mut g = Gateway::start(
        Opts::default()
            .arg("--threads")
            .arg("1")
            .arg("--access-log")
            .arg("off"),
    );
    let mut acked = Model::new();
    let mut counter = 0u64;
    let mut next_extra = 0u64;
    let mut writes = 0usize;
    let mut rounds = 0usize;
    let mut in_flight_landed = 0usize;

    while writes < WRITES && started.elapsed() < BUDGET {
        rounds += 1;
        let pid = g.pid().expect("running");
        // The kill lands a random time (0..4 ms, about one write) after write number `fuse` of
        // the round starts: before, inside or just after it, at any step of the commit.
        let fuse = rng.below(12) as usize;
        let delay = Duration::from_micros(rng.below(4000));
        let killed = Arc::new(AtomicBool::new(false));
        let (arm, armed) = std::sync::mpsc::channel::<()>();
        let killer = {
            let killed = killed.clone();
            std::thread::spawn(move || {
                if armed.recv().is_err() {
                    return;
                }
                std::thread::sleep(delay);
                killed.store(true, Ordering::SeqCst);
                let _ = Command::new("kill")
                    .arg("-KILL")
                    .arg(pid.to_string())
                    .status();
            })
        };
        let mut in_round = 0usize;

        // Write until the process dies under us; the write that gets no answer is in flight.
        let pending = loop {
            let extras: Vec<String> = acked
                .keys()
                .filter(|k| k.starts_with("extra-"))
                .cloned()
                .collect();
            let op = match rng.below(10) {
                0 => {
                    next_extra += 1;
                    Op::Create {
                        name: format!("extra-{next_extra}"),
                    }
                }
                1 if !extras.is_empty() => Op::Delete {
                    name: extras[rng.below(extras.len() as u64) as usize].clone(),
                },
                _ => {
                    counter += 1;
                    Op::Put { counter }
                }
            };
            writes += 1;
            if in_round == fuse {
                let _ = arm.send(());
            }
            in_round += 1;
            match send(&g, &op) {
                Ok(true) => acked = applied(&acked, &op),
                Ok(false) => {
                    assert!(
                        killed.load(Ordering::SeqCst),
                        "a write failed while the gateway was alive\n{}",
                        g.logs()
                    );
                    break op;
                }
                Err(e) => panic!("unexpected answer: {e}"),
            }
        };
        killer.join().expect("killer thread");

        g.restart();
        let got = observed(&g);
        if got == acked {
            // The write in flight did not land.
        } else if got == applied(&acked, &pending) {
            in_flight_landed += 1;
            acked = got;
        } else {
            panic!(
                "round {rounds}: the restarted state is neither the acknowledged one nor that plus the write in flight\nacknowledged: {acked:?}\nin flight: {pending:?}\nloaded: {got:?}"
            );
        }
    }
    eprintln!(
        "{writes} writes, {rounds} crashes, {in_flight_landed} in-flight writes landed, {:?}",
        started.elapsed()
    );
    assert!(
        writes >= WRITES / 2,
        "only {writes} writes within {BUDGET:?}: too slow to mean much"
    );
    assert!(rounds >= 10, "only {rounds} crashes");
}

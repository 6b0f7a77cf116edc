//! The election against a mock apiserver (tower-test, as kube-rs controller-rs does), on
//! tokio's paused clock: each request is answered by hand, and the leadership state is checked
//! at the (virtual) moment of each request.

use super::*;
use futures::StreamExt;
use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

const ME: &str = "replica-a";
const LEASE_URI: &str = "/apis/coordination.k8s.io/v1/namespaces/monasca-system/leases";

fn timing() -> LeaseTiming {
    LeaseTiming::new(30).expect("30 s is in range")
}

fn lease(holder: Option<&str>, renew: &str, version: u32) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": LEASE_NAME, "namespace": "monasca-system",
                     "resourceVersion": version.to_string()},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 30,
                 "renewTime": renew, "leaseTransitions": 0},
    })
}

fn status(code: StatusCode) -> Value {
    let reason = match code {
        StatusCode::NOT_FOUND => "NotFound",
        _ => "InternalError",
    };
    json!({"apiVersion": "v1", "kind": "Status", "status": "Failure",
           "reason": reason, "message": "injected failure", "code": code.as_u16()})
}

/// The next request, its body, and a function to answer it.
async fn next(
    handle: &mut Handle,
) -> (
    Method,
    String,
    Value,
    tower_test::mock::SendResponse<Response<Body>>,
) {
    let (request, send) = handle.next_request().await.expect("a request");
    let method = request.method().clone();
    let uri = request.uri().path().to_string();
    let bytes = request.into_body().collect_bytes().await.expect("body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("JSON body")
    };
    (method, uri, body, send)
}

fn answer(send: tower_test::mock::SendResponse<Response<Body>>, code: StatusCode, body: &Value) {
    let response = Response::builder()
        .status(code)
        .body(Body::from(serde_json::to_vec(body).expect("json")))
        .expect("response");
    send.send_response(response);
}

/// Answers one GET with `body` (or an error status).
async fn get(handle: &mut Handle, code: StatusCode, body: Value) {
    let (method, uri, _, send) = next(handle).await;
    assert_eq!(
        (method, uri.as_str()),
        (Method::GET, format!("{LEASE_URI}/{LEASE_NAME}").as_str())
    );
    answer(send, code, &body);
}

/// Answers one write (POST or PUT), echoing its body as stored with `version`; returns it.
async fn write(handle: &mut Handle, expected: Method, version: u32) -> Value {
    let (method, _, mut body, send) = next(handle).await;
    assert_eq!(method, expected);
    body["metadata"]["resourceVersion"] = json!(version.to_string());
    answer(send, StatusCode::OK, &body);
    body
}

fn start() -> (Handle, Leadership, watch::Sender<bool>) {
    let (mock, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(mock, "monasca-system");
    let elector = Elector::new(client, "monasca-system", ME, timing());
    let (state_tx, state_rx) = watch::channel(None);
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(run_lease(elector, state_tx, stop_rx));
    (handle, Leadership::from_receiver(state_rx), stop_tx)
}

#[tokio::test(start_paused = true)]
async fn one_api_error_does_not_demote_and_an_outage_ends_writes_at_the_local_deadline() {
    let (mut apiserver, leadership, stop) = start();
    let t0 = Instant::now();
    let mut gained = Box::pin(leadership.gained());

    // No Lease: created, holding it.
    get(
        &mut apiserver,
        StatusCode::NOT_FOUND,
        status(StatusCode::NOT_FOUND),
    )
    .await;
    let created = write(&mut apiserver, Method::POST, 1).await;
    assert_eq!(created["spec"]["holderIdentity"], ME);
    assert_eq!(created["spec"]["leaseDurationSeconds"], 30);
    assert_eq!(gained.next().await, Some(()));
    assert!(leadership.is_leader());

    // One failed renewal: still the leader (the deadline, 20 s after t0, has not passed)...
    get(
        &mut apiserver,
        StatusCode::INTERNAL_SERVER_ERROR,
        status(StatusCode::INTERNAL_SERVER_ERROR),
    )
    .await;
    assert!(leadership.is_leader(), "one error does not demote");
    // ...and the next successful renewal extends the deadline.
    let (method, _, _, send) = next(&mut apiserver).await;
    assert_eq!(method, Method::GET);
    assert!(leadership.is_leader());
    let renewed_at = Instant::now();
    answer(send, StatusCode::OK, &created);
    let renewed = write(&mut apiserver, Method::PUT, 2).await;
    assert_eq!(renewed["spec"]["holderIdentity"], ME);
    assert_eq!(
        renewed["spec"]["acquireTime"], created["spec"]["acquireTime"],
        "renewal keeps the acquisition time"
    );
    assert!(renewed_at.duration_since(t0) >= timing().retry * 2);

    // The apiserver goes away: every round fails. Leader exactly until the local deadline
    // (start of the last successful round + duration - grace), then not, without any
    // successful call in between; the process keeps going.
    let deadline = renewed_at + timing().leadership();
    let mut rounds = 0;
    loop {
        let (method, _, _, send) = next(&mut apiserver).await;
        assert_eq!(method, Method::GET);
        let now = Instant::now();
        assert_eq!(
            leadership.is_leader(),
            now < deadline,
            "at +{:?}",
            now.duration_since(renewed_at)
        );
        answer(
            send,
            StatusCode::SERVICE_UNAVAILABLE,
            &status(StatusCode::SERVICE_UNAVAILABLE),
        );
        rounds += 1;
        if now > deadline + timing().duration {
            break;
        }
    }
    assert!(rounds >= 5, "the outage lasted several rounds");
    assert!(!leadership.is_leader());
    assert!(
        leadership.lost().await,
        "lost() resolves once the deadline passed"
    );

    // The apiserver is back and the Lease is still ours (nobody took it): leader again.
    get(&mut apiserver, StatusCode::OK, renewed.clone()).await;
    write(&mut apiserver, Method::PUT, 3).await;
    assert_eq!(
        gained.next().await,
        Some(()),
        "leadership regained after the outage"
    );
    assert!(leadership.is_leader());

    // Stop: the Lease is released (holder cleared) for the next replica.
    stop.send_replace(true);
    let (_, _, _, send) = next(&mut apiserver).await;
    answer(send, StatusCode::OK, &renewed);
    let released = write(&mut apiserver, Method::PUT, 4).await;
    assert_eq!(released["spec"]["holderIdentity"], Value::Null);
    assert!(!leadership.is_leader());
}

#[tokio::test(start_paused = true)]
async fn a_follower_takes_over_only_after_the_record_stopped_changing_for_a_lease_duration() {
    let (mut apiserver, leadership, _stop) = start();
    let first_seen = Instant::now();
    // Another replica renews twice, then stops (its renewTime is far in our future: clocks
    // differ, which must not matter).
    let renews = ["2040-01-01T00:00:00.000000Z", "2040-01-01T00:00:05.000000Z"];
    let mut last_change = first_seen;
    for (i, renew) in renews.iter().enumerate() {
        get(
            &mut apiserver,
            StatusCode::OK,
            lease(Some("replica-b"), renew, 1 + i as u32),
        )
        .await;
        last_change = Instant::now();
        assert!(!leadership.is_leader());
    }
    loop {
        let (method, _, _, send) = next(&mut apiserver).await;
        match method {
            Method::GET => {
                assert!(!leadership.is_leader());
                answer(
                    send,
                    StatusCode::OK,
                    &lease(Some("replica-b"), renews[1], 2),
                );
            }
            Method::PUT => {
                assert!(
                    Instant::now().duration_since(last_change) > timing().duration,
                    "taken over only after a whole lease duration without change"
                );
                answer(send, StatusCode::OK, &lease(Some(ME), renews[1], 3));
                break;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(leadership.acquired().await);
}

#[test]
fn decide_covers_create_renew_release_and_expiry() {
    let held_by = |holder: Option<&str>| LeaseSpec {
        holder_identity: holder.map(str::to_string),
        ..LeaseSpec::default()
    };
    assert_eq!(decide(None, ME, false), Action::Create);
    assert_eq!(decide(Some(&held_by(Some(ME))), ME, false), Action::Renew);
    assert_eq!(decide(Some(&held_by(None)), ME, false), Action::TakeOver);
    assert_eq!(
        decide(Some(&held_by(Some(""))), ME, false),
        Action::TakeOver
    );
    assert_eq!(decide(Some(&held_by(Some("b"))), ME, false), Action::Follow);
    assert_eq!(
        decide(Some(&held_by(Some("b"))), ME, true),
        Action::TakeOver
    );
}

#[test]
fn lease_duration_is_limited_to_30_to_60_seconds() {
    assert!(LeaseTiming::new(29).is_err());
    assert!(LeaseTiming::new(61).is_err());
    let t = LeaseTiming::new(60).expect("in range");
    assert_eq!(
        (t.grace, t.retry),
        (Duration::from_secs(20), Duration::from_secs(10))
    );
}

#[tokio::test]
async fn standalone_is_always_leader_and_channel_followers_are_not() {
    assert!(Leadership::standalone().is_leader());
    let (_tx, follower) = Leadership::channel(false);
    assert!(!follower.is_leader());
    assert!(follower.lost().await);
}

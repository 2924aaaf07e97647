//! The Perspective client against a scripted fake server on 127.0.0.1 (never any other address).
//! Waits run at a scaled clock (`with_time_scale`), so backoff and pacing take milliseconds.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use score::perspective::{PerspectiveConfig, PerspectiveScorer};
use score::{ScoreFailure, ToxicityScorer};

/// The fake server gives up on a script after this long, so a broken test cannot hang the suite.
const SERVER_DEADLINE: Duration = Duration::from_secs(10);
/// How long a `Hang` step holds a connection at most if the client never closes it.
const HANG_LIMIT: Duration = Duration::from_secs(3);
const PATH: &str = "/v1alpha1/comments:analyze";

/// One scripted answer, one per connection (the server closes each connection after answering).
enum Step {
    Reply {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: String,
    },
    /// Read the request, then say nothing until the client gives up.
    Hang,
}

fn ok(score: f64) -> Step {
    reply(
        200,
        &format!(
            r#"{{"attributeScores":{{"TOXICITY":{{"spanScores":[{{"begin":0,"end":4,"score":{{"value":{score},"type":"PROBABILITY"}}}}],"summaryScore":{{"value":{score},"type":"PROBABILITY"}}}}}},"languages":["en"],"detectedLanguages":["en"]}}"#
        ),
    )
}

fn reply(status: u16, body: &str) -> Step {
    Step::Reply {
        status,
        headers: Vec::new(),
        body: body.to_owned(),
    }
}

struct Recorded {
    at: Instant,
    request_line: String,
    body: serde_json::Value,
}

struct FakeServer {
    url: String,
    handle: JoinHandle<Vec<Recorded>>,
}

impl FakeServer {
    /// Serves `script` in order, one step per accepted connection, then stops.
    fn start(script: Vec<Step>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let url = format!("http://{}{PATH}", listener.local_addr().unwrap());
        listener.set_nonblocking(true).unwrap();
        let handle = std::thread::spawn(move || {
            let deadline = Instant::now() + SERVER_DEADLINE;
            let mut recorded = Vec::new();
            for step in script {
                let Some(mut stream) = accept_before(&listener, deadline) else {
                    break;
                };
                let Some((request_line, body)) = read_request(&mut stream) else {
                    continue;
                };
                recorded.push(Recorded {
                    at: Instant::now(),
                    request_line,
                    body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
                });
                match step {
                    Step::Reply {
                        status,
                        headers,
                        body,
                    } => {
                        let mut response = format!(
                            "HTTP/1.1 {status} Scripted\r\nContent-Type: application/json\r\n\
                             Content-Length: {}\r\nConnection: close\r\n",
                            body.len()
                        );
                        for (name, value) in headers {
                            response.push_str(&format!("{name}: {value}\r\n"));
                        }
                        response.push_str("\r\n");
                        response.push_str(&body);
                        let _ = stream.write_all(response.as_bytes());
                    }
                    Step::Hang => hang(&mut stream),
                }
            }
            recorded
        });
        Self { url, handle }
    }

    /// Waits for the script to end and returns the requests it saw.
    fn finish(self) -> Vec<Recorded> {
        self.handle.join().expect("fake server panicked")
    }
}

fn accept_before(listener: &TcpListener, deadline: Instant) -> Option<TcpStream> {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_millis(100)))
                    .unwrap();
                return Some(stream);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(_) => return None,
        }
    }
}

/// Reads one request: the request line and the body (by Content-Length).
fn read_request(stream: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let (head_end, content_length) = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i]).to_string();
            let length = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            break (i + 4, length);
        }
        match stream.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) if Instant::now() < deadline => {}
            Err(_) => return None,
        }
    };
    while buf.len() < head_end + content_length {
        match stream.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) if Instant::now() < deadline => {}
            Err(_) => return None,
        }
    }
    let request_line = String::from_utf8_lossy(&buf[..head_end])
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    Some((
        request_line,
        buf[head_end..head_end + content_length].to_vec(),
    ))
}

/// Holds the connection open without answering until the client closes it (or a time limit).
fn hang(stream: &mut TcpStream) {
    let until = Instant::now() + HANG_LIMIT;
    let mut chunk = [0u8; 256];
    while Instant::now() < until {
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}

/// A scorer aimed at `url` with a test key in the (test-unique) variable `var`, 100× faster clock.
fn scorer(url: &str, var: &str, tweak: impl FnOnce(&mut PerspectiveConfig)) -> PerspectiveScorer {
    // Edition 2021: `set_var` is safe; std serialises environment access, and each test uses its
    // own variable so tests running in parallel cannot see each other's keys.
    std::env::set_var(var, format!("test-key-{var}"));
    let mut config = PerspectiveConfig {
        endpoint: url.to_owned(),
        api_key_env: var.to_owned(),
        ..Default::default()
    };
    tweak(&mut config);
    PerspectiveScorer::new(config)
        .expect("scorer")
        .with_time_scale(0.01)
}

#[test]
fn scores_a_text_and_sends_the_documented_request() {
    let server = FakeServer::start(vec![ok(0.75)]);
    let var = "DETOX_TEST_PERSPECTIVE_KEY_OK";
    let mut scorer = scorer(&server.url, var, |_| {});
    assert_eq!(scorer.id(), "perspective:TOXICITY:en");
    assert_eq!(scorer.score_batch(&["you are nice"]), vec![Ok(0.75)]);

    let seen = server.finish();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].request_line,
        format!("POST {PATH}?key=test-key-{var} HTTP/1.1")
    );
    let body = &seen[0].body;
    assert_eq!(body["comment"]["text"], "you are nice");
    assert_eq!(body["languages"], serde_json::json!(["en"]));
    assert_eq!(
        body["requestedAttributes"],
        serde_json::json!({"TOXICITY": {}})
    );
    assert_eq!(
        scorer.stats(),
        score::perspective::PerspectiveStats {
            requests: 1,
            retries: 0,
            failures: 0
        }
    );
    // The key never shows in debug output.
    assert!(!format!("{scorer:?}").contains("test-key"));
}

#[test]
fn empty_texts_fail_without_a_request() {
    let server = FakeServer::start(vec![ok(0.1)]);
    let mut scorer = scorer(&server.url, "DETOX_TEST_PERSPECTIVE_KEY_EMPTY", |_| {});
    let results = scorer.score_batch(&["", " \n\t", "hello"]);
    assert_eq!(
        results,
        vec![
            Err(ScoreFailure::EmptyText),
            Err(ScoreFailure::EmptyText),
            Ok(0.1)
        ]
    );
    assert_eq!(server.finish().len(), 1);
    assert_eq!(scorer.stats().requests, 1);
    assert_eq!(scorer.stats().failures, 2);
}

#[test]
fn rate_limited_request_honours_retry_after_then_succeeds() {
    let server = FakeServer::start(vec![
        Step::Reply {
            status: 429,
            headers: vec![("Retry-After", "20".to_owned())],
            body: r#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED"}}"#.to_owned(),
        },
        ok(0.5),
    ]);
    // Backoff alone would wait 1 s (10 ms scaled); Retry-After asks for 20 s (200 ms scaled).
    let mut scorer = scorer(&server.url, "DETOX_TEST_PERSPECTIVE_KEY_429", |c| {
        c.initial_backoff_secs = 1.0;
    });
    assert_eq!(scorer.score_batch(&["some text"]), vec![Ok(0.5)]);

    let seen = server.finish();
    assert_eq!(seen.len(), 2);
    let gap = seen[1].at - seen[0].at;
    assert!(
        gap >= Duration::from_millis(200),
        "Retry-After ignored: {gap:?}"
    );
    assert_eq!(scorer.stats().requests, 2);
    assert_eq!(scorer.stats().retries, 1);
    assert_eq!(scorer.stats().failures, 0);
}

#[test]
fn server_errors_back_off_exponentially_then_fail_with_the_status() {
    let server = FakeServer::start(vec![
        reply(500, "oops"),
        reply(500, "oops"),
        reply(500, "oops"),
    ]);
    let mut scorer = scorer(&server.url, "DETOX_TEST_PERSPECTIVE_KEY_500", |c| {
        c.max_retries = 2;
        c.initial_backoff_secs = 2.0; // 20 ms, then 40 ms scaled
    });
    let results = scorer.score_batch(&["some text"]);
    // Counted as a failure, never a 0 score.
    assert_eq!(results, vec![Err(ScoreFailure::HttpStatus(500))]);

    let seen = server.finish();
    assert_eq!(seen.len(), 3, "one attempt plus max_retries");
    assert!(seen[1].at - seen[0].at >= Duration::from_millis(20));
    assert!(seen[2].at - seen[1].at >= Duration::from_millis(40));
    assert_eq!(scorer.stats().retries, 2);
    assert_eq!(scorer.stats().failures, 1);
}

#[test]
fn client_errors_are_not_retried_and_a_refused_key_stops_further_requests() {
    let server = FakeServer::start(vec![reply(400, "{}"), reply(403, "{}")]);
    let mut scorer = scorer(&server.url, "DETOX_TEST_PERSPECTIVE_KEY_4XX", |_| {});
    let results = scorer.score_batch(&["too long", "first", "second"]);
    assert_eq!(
        results,
        vec![
            Err(ScoreFailure::HttpStatus(400)),
            Err(ScoreFailure::HttpStatus(403)),
            Err(ScoreFailure::HttpStatus(403)),
        ]
    );
    assert_eq!(scorer.stats().requests, 2);
    assert_eq!(scorer.stats().failures, 3);
    assert_eq!(server.finish().len(), 2);
}

#[test]
fn malformed_responses_are_failures() {
    let server = FakeServer::start(vec![
        reply(200, "{not json"),
        reply(
            200,
            r#"{"attributeScores":{"INSULT":{"summaryScore":{"value":0.2}}}}"#,
        ),
    ]);
    let mut scorer = scorer(&server.url, "DETOX_TEST_PERSPECTIVE_KEY_MALFORMED", |_| {});
    let results = scorer.score_batch(&["a", "b"]);
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Err(ScoreFailure::Malformed(_)))),
        "{results:?}"
    );
    assert_eq!(
        server.finish().len(),
        2,
        "malformed answers are not retried"
    );
}

#[test]
fn an_unanswered_request_times_out() {
    let server = FakeServer::start(vec![Step::Hang, Step::Hang]);
    let mut scorer = scorer(&server.url, "DETOX_TEST_PERSPECTIVE_KEY_TIMEOUT", |c| {
        c.timeout_secs = 0.3;
        c.max_retries = 1;
    });
    let start = Instant::now();
    assert_eq!(
        scorer.score_batch(&["anyone there?"]),
        vec![Err(ScoreFailure::Timeout)]
    );
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_millis(600), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    assert_eq!(server.finish().len(), 2, "the timeout was retried once");
    assert_eq!(scorer.stats().retries, 1);
}

#[test]
fn connection_refused_is_other_and_does_not_leak_the_key() {
    // A port that was free a moment ago: nothing listens there now.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}{PATH}");
    let mut scorer = scorer(&url, "DETOX_TEST_PERSPECTIVE_KEY_REFUSED", |c| {
        c.max_retries = 1;
    });
    let results = scorer.score_batch(&["hello"]);
    match &results[0] {
        Err(ScoreFailure::Other(message)) => assert!(!message.contains("test-key"), "{message}"),
        other => panic!("expected Other, got {other:?}"),
    }
    assert_eq!(scorer.stats().requests, 2);
}

#[test]
fn requests_are_paced_to_the_configured_rate() {
    const N: usize = 5;
    let server = FakeServer::start((0..N).map(|_| ok(0.2)).collect());
    // 2 requests per second at a 0.1 clock scale: one request every 50 ms.
    let var = "DETOX_TEST_PERSPECTIVE_KEY_QPS";
    std::env::set_var(var, "test-key-qps");
    let config = PerspectiveConfig {
        endpoint: server.url.clone(),
        api_key_env: var.to_owned(),
        requests_per_second: 2.0,
        ..Default::default()
    };
    let mut scorer = PerspectiveScorer::new(config).unwrap().with_time_scale(0.1);
    let texts = ["a"; N];
    let start = Instant::now();
    let results = scorer.score_batch(&texts);
    let elapsed = start.elapsed();
    assert!(results.iter().all(|r| *r == Ok(0.2)), "{results:?}");
    let min = Duration::from_millis(50) * (N as u32 - 1);
    assert!(
        elapsed >= min,
        "{N} requests took {elapsed:?}, less than {min:?}"
    );
    assert_eq!(server.finish().len(), N);
}

#[test]
fn missing_key_names_the_variable() {
    let var = "DETOX_TEST_PERSPECTIVE_KEY_NEVER_SET";
    std::env::remove_var(var);
    let config = PerspectiveConfig {
        api_key_env: var.to_owned(),
        ..Default::default()
    };
    let err = PerspectiveScorer::new(config).unwrap_err().to_string();
    assert!(err.contains(var), "{err}");
}

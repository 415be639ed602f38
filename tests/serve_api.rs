//! `loupe serve`'s API, end to end: the binary serves runs it made itself on a tiny model, on a
//! loopback port, and every endpoint is called, with bad input answered by exact status codes and
//! JSON errors.

mod common;

use common::{serve_fixture, Server};
use serde_json::{json, Value};

/// An HTTP client that returns error statuses as responses, not errors.
fn agent() -> ureq::Agent {
    ureq::Agent::new_with_config(ureq::Agent::config_builder().http_status_as_error(false).build())
}

/// (status, JSON body)
fn get(url: &str) -> (u16, Value) {
    let mut response = agent().get(url).call().unwrap();
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn post(url: &str, body: &Value) -> (u16, Value) {
    post_raw(url, "application/json", &body.to_string())
}

fn post_raw(url: &str, content_type: &str, body: &str) -> (u16, Value) {
    let mut response = agent()
        .post(url)
        .header("Content-Type", content_type)
        .send(body)
        .unwrap();
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// The whole event stream of playground job `job` on the server at `url` (it closes when the job
/// ends).
fn job_events(url: &str, job: u64) -> String {
    let mut events = agent()
        .get(format!("{url}/api/jobs/{job}/events"))
        .call()
        .unwrap();
    assert_eq!(events.headers()["content-type"], "text/event-stream");
    events.body_mut().read_to_string().unwrap()
}

/// An error answer: the status, and a JSON message containing each needle.
fn assert_error(answer: (u16, Value), status: u16, needles: &[&str]) {
    assert_eq!(answer.0, status, "{}", answer.1);
    let message = answer.1["error"]
        .as_str()
        .unwrap_or_else(|| panic!("not a JSON error: {}", answer.1));
    for needle in needles {
        assert!(message.contains(needle), "expected {needle:?} in {message:?}");
    }
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn every_endpoint_answers_and_bad_input_gets_exact_errors() {
    let fixture = serve_fixture();
    let roots = fixture.path().join("runs");
    let server = Server::start(&["--root", roots.to_str().unwrap()]);
    let api = |path: &str| format!("{}/api{path}", server.url);

    // The page and its assets.
    let mut page = agent().get(&server.url).call().unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(page
        .body_mut()
        .read_to_string()
        .unwrap()
        .contains("/assets/app.js"));
    for asset in ["/assets/app.js", "/assets/style.css"] {
        assert_eq!(
            agent()
                .get(format!("{}{asset}", server.url))
                .call()
                .unwrap()
                .status()
                .as_u16(),
            200
        );
    }

    // Runs: one of each kind, with what the home page shows.
    let (status, runs) = get(&api("/runs"));
    assert_eq!(status, 200);
    let by_kind = |kind: &str| -> Value {
        runs["runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} in {runs}"))
            .clone()
    };
    let store = by_kind("store");
    assert_eq!(store["id"], "runs/store");
    assert_eq!(store["labels"]["fields"], json!(["lang"]));
    assert!(store["tokens"].as_u64().unwrap() > 0);
    let sae = by_kind("sae");
    assert_eq!(
        (
            sae["id"].as_str(),
            sae["architecture"].as_str(),
            sae["has_top"].as_bool()
        ),
        (Some("runs/sae"), Some("topk"), Some(true))
    );
    assert!(sae["tensorboard"]
        .as_str()
        .unwrap()
        .starts_with("tensorboard --logdir"));
    assert_eq!(by_kind("probe")["features"], json!(["lang=a"]));
    assert_eq!(by_kind("scope")["records"], 8);
    // A steering run also writes results.jsonl, and is told apart by its concepts.
    let steer = by_kind("steer");
    assert_eq!(
        (steer["id"].as_str(), steer["records"].as_u64()),
        (Some("runs/steer"), Some(12))
    );
    assert_eq!(steer["concepts"], json!(["animals"]));
    assert_eq!(steer["has_report"], true);
    let (status, _) = get(&api("/file?run=runs%2Fsteer&path=steer.html"));
    assert_eq!(status, 200);

    // The feature browser.
    let (status, overview) = get(&api("/sae?run=runs%2Fsae"));
    assert_eq!(status, 200, "{overview}");
    let d_sae = overview["d_sae"].as_u64().unwrap();
    assert_eq!(overview["hook"], "blocks.1.hook_resid_post");
    let (status, page) = get(&api("/sae/latents?run=runs%2Fsae&sort=max&limit=5"));
    assert_eq!(status, 200, "{page}");
    let latents = page["latents"].as_array().unwrap();
    assert_eq!(latents.len(), 5);
    assert!(latents
        .windows(2)
        .all(|w| w[0]["max_activation"].as_f64() >= w[1]["max_activation"].as_f64()));
    let (_, by_density) = get(&api("/sae/latents?run=runs%2Fsae&sort=density&limit=3"));
    let densities: Vec<f64> = by_density["latents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["frequency"].as_f64().unwrap())
        .collect();
    assert!(densities.windows(2).all(|w| w[0] >= w[1]), "{densities:?}");
    // Searching by a top token finds only latents listing it.
    let token = latents[0]["top_tokens"][0].as_str().unwrap().trim().to_string();
    let (_, found) = get(&api(&format!("/sae/latents?run=runs%2Fsae&q={}", encode(&token))));
    assert!(found["total"].as_u64().unwrap() >= 1);
    for l in found["latents"].as_array().unwrap() {
        assert!(
            l["top_tokens"].as_array().unwrap().iter().any(|t| t
                .as_str()
                .unwrap()
                .to_lowercase()
                .contains(&token.to_lowercase())),
            "{l}"
        );
    }
    let strongest = latents[0]["latent"].as_u64().unwrap();
    let (status, latent) = get(&api(&format!("/sae/latent?run=runs%2Fsae&latent={strongest}")));
    assert_eq!(status, 200, "{latent}");
    let examples = latent["examples"].as_array().unwrap();
    assert!(!examples.is_empty());
    for example in examples {
        let tokens: Vec<&str> = example["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        assert!(
            tokens.iter().all(|t| !t.contains('\u{FFFD}')),
            "multi-byte characters are whole: {tokens:?}"
        );
        assert_eq!(example["activations"].as_array().unwrap().len(), tokens.len());
    }
    let histogram = &latent["histogram"];
    assert_eq!(histogram["counts"].as_array().unwrap().len(), 24);
    assert!(histogram["fired"].as_u64().unwrap() > 0, "{histogram}");
    assert_eq!(latent["logit_lens"]["top"].as_array().unwrap().len(), 10);
    assert_eq!(latent["logit_lens"]["bottom"].as_array().unwrap().len(), 10);

    let (status, sentence) = post(
        &api("/sae/sentence"),
        &json!({"run": "runs/sae", "text": "tt t café ttt"}),
    );
    assert_eq!(status, 200, "{sentence}");
    let pieces: String = sentence["pieces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["text"].as_str().unwrap())
        .collect();
    assert_eq!(pieces, "tt t café ttt");
    let active = sentence["latents"].as_array().unwrap();
    assert!(!active.is_empty());
    assert!(active
        .iter()
        .all(|l| l["activations"].as_array().unwrap().len() == sentence["pieces"].as_array().unwrap().len()));

    // Probes.
    let (status, probes) = get(&api("/probe?run=runs%2Fprobes"));
    assert_eq!(status, 200, "{probes}");
    let group = &probes["groups"][0];
    assert_eq!(
        (group["feature"].as_str(), group["hook"].as_str()),
        (Some("lang=a"), Some("blocks.1.mlp.hook_post"))
    );
    let ks: Vec<u64> = group["methods"]["mean_diff"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["k"].as_u64().unwrap())
        .collect();
    assert_eq!(ks, [1, 2, 4]);
    let (status, detail) = get(&api(
        "/probe/detail?run=runs%2Fprobes&feature=lang%3Da&hook=blocks.1.mlp.hook_post&method=f_stat&k=2",
    ));
    assert_eq!(status, 200, "{detail}");
    let neurons = detail["neurons"].as_array().unwrap();
    assert_eq!(neurons.len(), 2);
    assert!(!neurons[0]["contexts"].as_array().unwrap().is_empty(), "{detail}");

    // The scope run.
    let (status, scope) = get(&api("/scope?run=runs%2Fscope"));
    assert_eq!(status, 200, "{scope}");
    assert_eq!(scope["records"].as_array().unwrap().len(), 8);
    assert_eq!(scope["threshold"].as_f64(), Some(0.3));
    assert!(scope["charts"]
        .as_array()
        .unwrap()
        .contains(&json!("held_out.svg")));
    let mut report = agent()
        .get(api("/file?run=runs%2Fscope&path=report.html"))
        .call()
        .unwrap();
    assert_eq!(report.status().as_u16(), 200);
    assert!(report
        .body_mut()
        .read_to_string()
        .unwrap()
        .contains("Held-out comparison"));

    // Top contexts from an earlier SAE of another width are not shown as this one's.
    let stale = roots.join("sae-stale");
    std::fs::create_dir_all(stale.join("top")).unwrap();
    for file in ["cfg.json", "sae_weights.safetensors"] {
        std::fs::copy(roots.join("sae").join(file), stale.join(file)).unwrap();
    }
    let mut top: Value =
        serde_json::from_slice(&std::fs::read(roots.join("sae/top/top.json")).unwrap()).unwrap();
    top["latents"].as_array_mut().unwrap().truncate(1);
    std::fs::write(stale.join("top/top.json"), top.to_string()).unwrap();
    let (status, overview) = get(&api("/sae?run=runs%2Fsae-stale"));
    assert_eq!(status, 200, "{overview}");
    assert!(
        overview["note"]
            .as_str()
            .unwrap()
            .contains(&format!("lists 1 latents but the SAE has {d_sae}")),
        "{overview}"
    );
    assert_error(
        get(&api("/sae/latents?run=runs%2Fsae-stale")),
        404,
        &["from an earlier SAE", "loupe sae top"],
    );

    // Bad input: unknown runs and latents, traversal, malformed and oversized requests.
    assert_error(
        get(&api("/sae?run=runs%2Fnope")),
        404,
        &["no sae run named 'runs/nope'"],
    );
    assert_error(get(&api("/sae?run=runs%2Fstore")), 404, &["no sae run"]);
    assert_error(
        get(&api("/probe?run=..%2F..%2Fetc%2Fpasswd")),
        404,
        &["no probe run"],
    );
    assert_error(
        get(&api(&format!("/sae/latent?run=runs%2Fsae&latent={d_sae}"))),
        404,
        &["does not exist", &format!("0 to {}", d_sae - 1)],
    );
    assert_error(
        get(&api("/sae/latents?run=runs%2Fsae&sort=loud")),
        400,
        &["sort 'loud'", "density"],
    );
    assert_error(get(&api("/sae/latent?run=runs%2Fsae")), 400, &["latent"]);
    assert_error(
        get(&api("/file?run=runs%2Fscope&path=..%2F..%2F..%2Fetc%2Fpasswd")),
        403,
        &["inside the run's folder"],
    );
    assert_error(
        get(&api("/file?run=runs%2Fscope&path=%2Fetc%2Fpasswd")),
        403,
        &["relative path"],
    );
    assert_error(
        get(&api("/file?run=runs%2Fscope&path=nothing.svg")),
        404,
        &["has no file 'nothing.svg'"],
    );
    assert_error(
        get(&format!("{}/../../etc/passwd", server.url)),
        404,
        &["nothing at"],
    );
    assert_error(get(&api("/nothing")), 404, &["nothing at /api/nothing"]);
    assert_error(
        post(&api("/sae/sentence"), &json!({"run": "runs/sae", "text": "  "})),
        400,
        &["text: is empty"],
    );
    let long = "a".repeat(3_000);
    assert_error(
        post(&api("/sae/sentence"), &json!({"run": "runs/sae", "text": long})),
        413,
        &["3000 characters", "at most 2000"],
    );
    let huge = json!({"run": "runs/sae", "text": "b".repeat(70_000)});
    assert_error(
        post(&api("/sae/sentence"), &huge),
        413,
        &["larger than the server's limit"],
    );
    assert_error(
        post_raw(&api("/sae/sentence"), "application/json", "{\"run\": "),
        400,
        &[],
    );
    assert_error(
        post_raw(&api("/sae/sentence"), "text/plain", "{}"),
        415,
        &["Content-Type"],
    );
    assert_error(
        post(&api("/sae/sentence"), &json!({"run": "runs/sae"})),
        422,
        &["text"],
    );
    assert_error(
        get(&api(
            "/probe/detail?run=runs%2Fprobes&feature=lang%3Da&hook=blocks.1.mlp.hook_post&method=f_stat&k=3",
        )),
        404,
        &["no probe", "k = 3"],
    );

    // The playground: bad requests first, then a job streamed to the end.
    let request = |layers: Value| {
        json!({
            "model": fixture.path().join("model"),
            "prompt": "the dog",
            "layers": layers,
            "target": "the cat sat on the mat",
            "amplifiers": [{"kind": "none"}, {"kind": "scale", "values": [3]}, {"kind": "sae", "run": "runs/sae", "latent": strongest, "values": [4]}],
            "max_new_tokens": 4,
        })
    };
    assert_error(
        post(&api("/playground"), &request(json!([7]))),
        400,
        &["source.layers", "layer 7 does not exist"],
    );
    assert_error(
        post(&api("/playground"), &request(json!([]))),
        400,
        &["layers: give 1 to"],
    );
    let mut too_long = request(json!([0]));
    too_long["prompt"] = json!("p".repeat(2_001));
    assert_error(
        post(&api("/playground"), &too_long),
        413,
        &["prompt: 2001 characters"],
    );
    let mut unknown_sae = request(json!([0]));
    unknown_sae["amplifiers"][2]["run"] = json!("runs/other");
    assert_error(
        post(&api("/playground"), &unknown_sae),
        404,
        &["no sae run named 'runs/other'"],
    );
    assert_error(get(&api("/jobs/999")), 404, &["no job 999"]);

    let (status, started) = post(&api("/playground"), &request(json!([0, 1])));
    assert_eq!(status, 202, "{started}");
    // none and scale at both layers, the latent only at its own hook (layer 1).
    assert_eq!(started["total"], 5);
    let job = started["job"].as_u64().unwrap();
    let stream = job_events(&server.url, job);
    let records: Vec<Value> = stream
        .split("\n\n")
        .filter(|e| e.contains("event: record"))
        .map(|e| serde_json::from_str(e.lines().find_map(|l| l.strip_prefix("data: ")).unwrap()).unwrap())
        .collect();
    assert_eq!(records.len(), 5, "{stream}");
    assert!(
        stream.contains("event: end\ndata: {\"error\":null,\"status\":\"done\"}"),
        "{stream}"
    );
    assert!(
        records
            .iter()
            .any(|r| r["label"].as_str().unwrap().starts_with("sae latent")),
        "{records:?}"
    );
    let (status, finished) = get(&api(&format!("/jobs/{job}")));
    assert_eq!(
        (status, finished["status"].as_str(), finished["done"].as_u64()),
        (200, Some("done"), Some(5))
    );

    // One job at a time: a second request while one runs is refused; a cancelled job stops.
    let mut big = request(json!([0, 1, 2]));
    big["amplifiers"] = json!([{"kind": "scale", "values": [1, 2, 3, 4, 5, 6, 7, 8]}, {"kind": "cfg", "values": [1, 2, 3, 4, 5, 6, 7, 8]}]);
    big["max_new_tokens"] = json!(64);
    let (status, running) = post(&api("/playground"), &big);
    assert_eq!(status, 202, "{running}");
    let running = running["job"].as_u64().unwrap();
    assert_error(
        post(&api("/playground"), &request(json!([0]))),
        409,
        &["busy with playground job", "cancel"],
    );
    let (status, cancel) = post(&api(&format!("/jobs/{running}/cancel")), &json!({}));
    assert_eq!(
        (status, cancel["cancel_requested"].as_bool()),
        (200, Some(true)),
        "{cancel}"
    );
    let stream = job_events(&server.url, running);
    assert!(stream.contains("\"status\":\"cancelled\""), "{stream}");
    let (_, stopped) = get(&api(&format!("/jobs/{running}")));
    assert!(stopped["done"].as_u64() < stopped["total"].as_u64(), "{stopped}");
    // Free again.
    let (status, started) = post(&api("/playground"), &request(json!([1])));
    assert_eq!(status, 202, "{started}");
}

#[test]
fn a_token_guards_every_request_when_the_server_has_one() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    let server = Server::start(&["--root", root, "--token", "s3cret"]);
    assert!(server.banner.contains("?token=s3cret"), "{}", server.banner);
    assert_error(
        get(&format!("{}/api/runs", server.url)),
        401,
        &["requires its token", "Bearer"],
    );
    assert_error(get(&format!("{}/", server.url)), 401, &[]);
    assert_error(get(&format!("{}/api/runs?token=wrong", server.url)), 401, &[]);
    let mut response = agent()
        .get(format!("{}/api/runs", server.url))
        .header("Authorization", "Bearer s3cret")
        .call()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert!(response
        .body_mut()
        .read_to_string()
        .unwrap()
        .contains("\"runs\":[]"));
    // Opening the page with ?token= sets a cookie that later requests carry.
    let response = agent()
        .get(format!("{}/?token=s3cret", server.url))
        .call()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let cookie = response.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.starts_with("loupe_token=s3cret;") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    let response = agent()
        .get(format!("{}/api/playground/options", server.url))
        .header("Cookie", "loupe_token=s3cret")
        .call()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    drop(server);

    // Beyond loopback: a warning, and a generated token that is then required.
    let server = Server::start(&["--root", root, "--host", "0.0.0.0"]);
    let token = server
        .banner
        .split("?token=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    assert_eq!(token.len(), 32, "{}", server.banner);
    assert_error(get(&format!("{}/api/runs", server.url)), 401, &[]);
    assert_eq!(get(&format!("{}/api/runs?token={token}", server.url)).0, 200);
    let stderr = server.stop();
    assert!(stderr.contains("warning: listening on 0.0.0.0"), "{stderr}");

    // A root that does not exist is refused before anything listens.
    let out = common::loupe(&["serve", "--root", &format!("{root}/missing"), "--port", "0"]);
    common::assert_clear_error(&out, &["--root", "missing", "no such folder"]);
    // Without --root, the default folders that exist are served; where there is none, it says so.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_loupe"))
        .args(["serve", "--port", "0"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    common::assert_clear_error(&out, &["no checkpoints/ or activations/", "--root DIR"]);
}

#[test]
fn feature_book_entries_are_playground_amplifiers() {
    let fixture = serve_fixture();
    let dir = fixture.path();
    // Paths in a book are relative to the working directory, or to the book when not found there.
    std::fs::write(
        dir.join("book.toml"),
        "[[feature]]\nname = \"tiny latent\"\nkind = \"sae\"\nsae = \"runs/sae\"\nlatent = 3\nconcepts = [\"tt\"]\n",
    )
    .unwrap();
    let book = dir.join("book.toml");
    let server = Server::start(&[
        "--root",
        dir.join("runs").to_str().unwrap(),
        "--features",
        book.to_str().unwrap(),
    ]);
    let api = |path: &str| format!("{}/api{path}", server.url);
    let (status, options) = get(&api("/playground/options"));
    assert_eq!(status, 200);
    assert_eq!(options["features"][0]["name"], "tiny latent");
    assert_eq!(options["features"][0]["kind"], "sae");
    assert_eq!(options["entities"].as_array().unwrap().len(), 40);

    let request = |name: &str| {
        json!({
            "model": dir.join("model"),
            "prompt": "hello",
            "layers": [1],
            "target": "the cat sat on the mat",
            "amplifiers": [{"kind": "feature", "name": name, "values": [2, 4]}],
            "max_new_tokens": 3,
        })
    };
    assert_error(
        post(&api("/playground"), &request("nope")),
        404,
        &["no feature 'nope'", "--features"],
    );
    let (status, started) = post(&api("/playground"), &request("tiny latent"));
    assert_eq!((status, started["total"].as_u64()), (202, Some(2)), "{started}");
    let job = started["job"].as_u64().unwrap();
    let stream = job_events(&server.url, job);
    assert!(stream.contains("\"status\":\"done\""), "{stream}");
    assert_eq!(stream.matches("event: record").count(), 2, "{stream}");
    assert!(stream.contains("sae tiny latent ×2"), "{stream}");

    // A probe of a served probe run, at its own hook (the MLP neurons of layer 1).
    let probe = json!({
        "model": dir.join("model"),
        "prompt": "hello",
        "layers": [1],
        "site": "mlp_post",
        "target": "the cat sat on the mat",
        "amplifiers": [{"kind": "probe", "run": "runs/probes", "feature": "lang=a", "hook": "blocks.1.mlp.hook_post",
                        "method": "mean_diff", "k": 2, "values": [2, 4]}],
        "max_new_tokens": 3,
    });
    let (status, started) = post(&api("/playground"), &probe);
    assert_eq!((status, started["total"].as_u64()), (202, Some(2)), "{started}");
    let job = started["job"].as_u64().unwrap();
    let stream = job_events(&server.url, job);
    assert!(stream.contains("\"status\":\"done\""), "{stream}");
    assert_eq!(stream.matches("event: record").count(), 2, "{stream}");
    assert!(stream.contains("\"amplifier\":\"probe\""), "{stream}");
    drop(server);

    // A book that cannot be read stops the server before it listens, naming the file.
    std::fs::write(dir.join("bad.toml"), "[[feature]]\nkind = \"sae\"\n").unwrap();
    let out = common::loupe(&[
        "serve",
        "--root",
        dir.to_str().unwrap(),
        "--port",
        "0",
        "--features",
        dir.join("bad.toml").to_str().unwrap(),
    ]);
    common::assert_clear_error(&out, &["--features", "bad.toml", "without a name"]);
}

//! `loupe serve` in a real browser: headless Chromium, driven over WebDriver (chromedriver) by
//! fantoccini, clicks through the app on runs the binary made itself on a tiny model: the home page,
//! an SAE's latents, one latent, a sentence searched live, a probe, a scope run, and a 2-layer
//! playground job run to completion from a latent's "steer" button. A screenshot of each step is
//! written to `target/tmp/serve-screenshots/` for a person to look at.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them).

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{serve_fixture, Server};
use fantoccini::actions::InputSource as _;
use fantoccini::{Client, ClientBuilder, Locator};

/// chromedriver on a free loopback port, stopped when dropped.
struct Driver(Child, u16);

impl Driver {
    fn start() -> Driver {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver runs: install Debian's chromium and chromium-driver (.ci/run does)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Driver(child, port)
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn browser(driver: &Driver, profile: &Path) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            // The machine's network is closed: Chromium's background connections are turned off.
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1280,900",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{}", driver.1))
        .await
        .expect("a Chromium session starts")
}

fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("serve-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.unwrap();
    std::fs::write(screenshot_dir().join(format!("{name}.png")), png).unwrap();
}

/// Waits for `css` and returns its text.
async fn text_of(client: &Client, css: &str) -> String {
    let element = client
        .wait()
        .at_most(Duration::from_secs(60))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css} did not appear: {e}"));
    element.text().await.unwrap()
}

async fn count(client: &Client, css: &str) -> usize {
    client.find_all(Locator::Css(css)).await.unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_clicks_through_the_app() {
    let fixture = serve_fixture();
    let server = Server::start(&["--root", fixture.path().join("runs").to_str().unwrap()]);
    let driver = Driver::start();
    let client = browser(&driver, &fixture.path().join("chromium-profile")).await;

    // Home: every run, by kind.
    client.goto(&server.url).await.unwrap();
    let sae_row = text_of(&client, "#runs-sae tr:nth-child(2)").await;
    assert!(
        sae_row.contains("runs/sae") && sae_row.contains("topk"),
        "{sae_row}"
    );
    assert!(text_of(&client, "#runs-store").await.contains("lang: a, b"));
    assert!(text_of(&client, "#runs-scope").await.contains("report.html"));
    screenshot(&client, "01-home").await;

    // The SAE: its latents by max activation, then the strongest one.
    client
        .find(Locator::Css("#runs-sae a"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    text_of(&client, "#latents tr:nth-child(2)").await;
    client
        .find(Locator::Css("#latent-sort option[value=max]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    while !client.current_url().await.unwrap().as_str().contains("sort=max") {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    text_of(&client, "#latents tr:nth-child(2)").await;
    screenshot(&client, "02-latents").await;
    client
        .find(Locator::Css("#latents tr:nth-child(2) a"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let title = text_of(&client, "#latent-title").await;
    assert!(title.starts_with("Latent #"), "{title}");
    text_of(&client, "#examples .panel .tokens span.hit").await;
    assert_eq!(count(&client, "#histogram rect").await, 24);
    assert_eq!(count(&client, "#lens-top > div").await, 10);
    let examples = text_of(&client, "#examples").await;
    assert!(!examples.contains('\u{FFFD}'), "{examples}");
    screenshot(&client, "03-latent").await;
    let latent_url = client.current_url().await.unwrap();

    // Which latents fire on a sentence.
    client.back().await.unwrap();
    let sentence = client
        .wait()
        .for_element(Locator::Css("#sentence"))
        .await
        .unwrap();
    sentence.send_keys("tt t café ttt").await.unwrap();
    client
        .find(Locator::Css("#sentence-run"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    text_of(&client, "#sentence-latents tr:nth-child(2)").await;
    assert!(count(&client, "#sentence-latents tr").await > 1);
    assert!(text_of(&client, "#sentence-latents").await.contains("café"));
    screenshot(&client, "04-sentence").await;

    // A probe: its F1 chart, then one probe's neurons and contexts.
    client.goto(&server.url).await.unwrap();
    client
        .wait()
        .for_element(Locator::Css("#runs-probe a"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    text_of(&client, "svg.f1-chart").await;
    client
        .find(Locator::Css("a.probe-point"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let neurons = text_of(&client, "#probe-neurons tr:nth-child(2)").await;
    assert!(!neurons.is_empty());
    screenshot(&client, "05-probe").await;

    // A scope run: the grid at a layer, filtered to one amplifier, a generation on hover.
    client.goto(&server.url).await.unwrap();
    client
        .wait()
        .for_element(Locator::Css("#runs-scope a"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    text_of(&client, "#scope-grid td.cell").await;
    assert_eq!(
        count(&client, "#scope-grid td.cell").await,
        4,
        "2 sources × (none, scale 3) at layer 0"
    );
    client
        .find(Locator::Css("#scope-amplifier option[value=scale]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(count(&client, "#scope-grid td.cell").await, 2);
    let cell = client.find(Locator::Css("#scope-grid td.cell")).await.unwrap();
    client
        .perform_actions(fantoccini::actions::MouseActions::new("mouse".into()).then(
            fantoccini::actions::PointerAction::MoveToElement {
                element: cell,
                duration: None,
                x: 2.0,
                y: 2.0,
            },
        ))
        .await
        .unwrap();
    let tooltip = text_of(&client, "#tooltip:not([hidden])").await;
    assert!(tooltip.contains("scale 3 at layer 0"), "{tooltip}");
    screenshot(&client, "06-scope").await;

    // Steer with the latent: the playground opens with it; run it at layers 0 and 1 to the end.
    client.goto(latent_url.as_str()).await.unwrap();
    client
        .wait()
        .for_element(Locator::Css("#steer"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let layers = client
        .wait()
        .for_element(Locator::Css("#pg-layers"))
        .await
        .unwrap();
    assert_eq!(
        layers.prop("value").await.unwrap().as_deref(),
        Some("1"),
        "the SAE's layer"
    );
    assert_eq!(
        client
            .find(Locator::Css("#pg-sae"))
            .await
            .unwrap()
            .prop("checked")
            .await
            .unwrap()
            .as_deref(),
        Some("true")
    );
    layers.clear().await.unwrap();
    layers.send_keys("0, 1").await.unwrap();
    let tokens = client.find(Locator::Css("#pg-tokens")).await.unwrap();
    tokens.clear().await.unwrap();
    tokens.send_keys("6").await.unwrap();
    client
        .find(Locator::Css("#pg-target option[value=custom]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    client
        .find(Locator::Css("#pg-target-text"))
        .await
        .unwrap()
        .send_keys("the cat sat on the mat")
        .await
        .unwrap();
    client
        .find(Locator::Css("#pg-run"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        let status = text_of(&client, "#pg-status").await;
        if status.starts_with("done") || status.starts_with("failed") || Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let error = client
        .find(Locator::Css("#error"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // none at layers 0 and 1, and the latent (×4, ×8) at its own layer, 1.
    assert_eq!(status, "done: 4 rows", "{error}");
    assert_eq!(
        count(&client, "#pg-grid tr").await,
        3,
        "a header and layers 0 and 1"
    );
    assert_eq!(count(&client, "#pg-grid td.cell").await, 4);
    let grid = text_of(&client, "#pg-grid").await;
    assert!(
        grid.contains("none") && grid.contains("sae latent") && grid.contains("score"),
        "{grid}"
    );
    screenshot(&client, "07-playground").await;

    client.close().await.unwrap();
}

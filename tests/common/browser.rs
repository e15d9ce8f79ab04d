//! A real browser for the status page: Debian's headless Chromium driven by
//! its ChromeDriver over WebDriver (the fantoccini client). The page is read
//! as a person sees it: `innerText`, which leaves out what CSS hides.
//!
//! ChromeDriver starts with `--port=0` and reports the port it bound, so no
//! port is guessed. In a network namespace, ChromeDriver and Chromium run
//! inside it and the WebDriver client runs on a thread that entered it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};

type Job = Box<dyn FnOnce(&Client) -> futures_util::future::BoxFuture<'_, ()> + Send>;

pub struct Browser {
    driver: Child,
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// A desktop browser window of 1200 x 900 CSS pixels, or `None` (skipped)
    /// where Chromium or ChromeDriver is missing.
    pub fn start(ns: Option<&str>) -> Option<Browser> {
        Browser::launch(ns, None)
    }

    /// A phone: Chromium's mobile emulation of a 390 x 844 screen at 3x.
    pub fn phone(ns: Option<&str>) -> Option<Browser> {
        Browser::launch(
            ns,
            Some(
                serde_json::json!({"deviceMetrics": {"width": 390, "height": 844, "pixelRatio": 3.0}}),
            ),
        )
    }

    /// `mobile`: Chromium's `mobileEmulation` capability, if any.
    fn launch(ns: Option<&str>, mobile: Option<serde_json::Value>) -> Option<Browser> {
        if super::skip_unless(
            super::have("chromium") && super::have("chromedriver"),
            "chromium and chromedriver (Debian packages chromium, chromium-driver)",
        ) {
            return None;
        }
        let mut c = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "chromedriver"]);
                c
            }
            None => Command::new("chromedriver"),
        };
        let mut driver = c
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromedriver");
        let port = driver_port(&mut driver);
        let profile = tempfile::tempdir().unwrap();
        let args = serde_json::json!([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1200,900",
            format!("--user-data-dir={}", profile.path().display()),
        ]);
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let ns = ns.map(str::to_string);
        let thread = std::thread::spawn(move || {
            if let Some(ns) = ns {
                super::netns::enter(&ns);
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut caps = serde_json::Map::new();
                let mut options = serde_json::json!({"binary": "/usr/bin/chromium", "args": args});
                if let Some(m) = mobile {
                    options["mobileEmulation"] = m;
                }
                caps.insert("goog:chromeOptions".into(), options);
                let client =
                    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                        .capabilities(caps)
                        .connect(&format!("http://127.0.0.1:{port}"))
                        .await
                        .expect("a WebDriver session with Chromium");
                ready_tx.send(()).unwrap();
                while let Ok(job) = rx.recv() {
                    job(&client).await;
                }
                let _ = client.close().await;
            });
        });
        ready_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("Chromium started");
        Some(Browser {
            driver,
            jobs: Some(tx),
            thread: Some(thread),
            _profile: profile,
        })
    }

    fn run<T: Send + 'static>(
        &self,
        f: impl for<'a> FnOnce(&'a Client) -> futures_util::future::BoxFuture<'a, T> + Send + 'static,
    ) -> T {
        let (tx, rx) = mpsc::channel();
        let job: Job = Box::new(move |c| {
            Box::pin(async move {
                let _ = tx.send(f(c).await);
            })
        });
        self.jobs.as_ref().unwrap().send(job).unwrap();
        rx.recv_timeout(Duration::from_secs(60))
            .expect("the browser answered")
    }

    /// Load `url` and wait until its scripts have put something on the page.
    pub fn goto(&self, url: &str) {
        let url = url.to_string();
        self.run(move |c| Box::pin(async move { c.goto(&url).await.expect("navigate") }));
        self.wait_for("updated", Duration::from_secs(10));
    }

    /// The value of the JavaScript expression `expr` on the page.
    pub fn eval(&self, expr: &str) -> serde_json::Value {
        let js = format!("return {expr}");
        self.run(move |c| {
            Box::pin(async move { c.execute(&js, vec![]).await.expect("run a script") })
        })
    }

    /// What a person sees: the body's rendered text (CSS-hidden text left out).
    pub fn text(&self) -> String {
        self.eval("document.body.innerText")
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Wait, without reloading, until the page shows `want`; the text then.
    pub fn wait_for(&self, want: &str, within: Duration) -> String {
        let end = Instant::now() + within;
        loop {
            let t = self.text();
            if t.contains(want) {
                return t;
            }
            assert!(
                Instant::now() < end,
                "the page never showed {want:?}; it shows:\n{t}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Click the link whose text is `text`, as a person would.
    pub fn click_link(&self, text: &str) {
        let text = text.to_string();
        self.run(move |c| {
            Box::pin(async move {
                c.find(Locator::LinkText(&text))
                    .await
                    .expect("the link is on the page")
                    .click()
                    .await
                    .expect("click")
            })
        });
    }

    /// The current URL.
    pub fn url(&self) -> String {
        self.run(|c| Box::pin(async move { c.current_url().await.unwrap().to_string() }))
    }

    /// Save a PNG of the window at `path`.
    pub fn screenshot(&self, path: &Path) {
        let png = self.run(|c| Box::pin(async move { c.screenshot().await.expect("screenshot") }));
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// ChromeDriver's "started successfully on port N." line.
fn driver_port(driver: &mut Child) -> u16 {
    let out = driver.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(p) = line
                .split("started successfully on port ")
                .nth(1)
                .and_then(|r| r.trim_end_matches('.').trim().parse::<u16>().ok())
            {
                let _ = tx.send(p);
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("chromedriver reported its port")
}

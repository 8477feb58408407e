//! Config hot reload through the real proxy: an edited file is swapped in, an invalid one is
//! refused with its line while the old config serves, member state persists, requests in flight
//! finish on their generation, and what needs a restart is refused whole.

use std::path::Path;

use farmgate::farm::MemberState;

use crate::support::*;

/// [`start_on_file`] with farmgate given a link to the file, which lives in a folder of its own:
/// the watcher looks at the link's folder, so edits of the file (returned) reach farmgate only
/// through an explicit reload, whose effect the test then sees alone.
async fn start_on_linked_file(dir: &Path, text: &str) -> (Proxy, std::path::PathBuf) {
    let file = dir.join("edited").join("farmgate.toml");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    write_config(&file, text);
    let link = dir.join("farmgate.toml");
    std::os::unix::fs::symlink(&file, &link).unwrap();
    let config = farmgate::Config::load(&link).unwrap_or_else(|e| panic!("{e}"));
    let running = farmgate::start(config).await.expect("starts");
    let addr = running.listeners()[0].1;
    (
        Proxy {
            running: Some(running),
            addr,
        },
        file,
    )
}

async fn served_by(client: &mut Client) -> String {
    let a = client.get("www.example.com", "/").await;
    assert_eq!(a.status, 200, "{}", a.text());
    a.header("x-backend").unwrap_or("").to_string()
}

#[tokio::test]
async fn an_edited_file_is_swapped_in() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let dir = tempfile::tempdir().unwrap();
    let (proxy, path) = start_on_file(dir.path(), &simple_config(&[&a], "", "")).await;
    let mut client = Client::connect(proxy.addr).await;
    assert_eq!(served_by(&mut client).await, "a");
    write_config(&path, &simple_config(&[&b], "", ""));
    bounded("the new config serves", async {
        while served_by(&mut client).await != "b" {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        proxy
            .running()
            .reloader
            .applied
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 1
    );
    for _ in 0..5 {
        assert_eq!(served_by(&mut client).await, "b");
    }
}

#[tokio::test]
async fn an_invalid_file_is_refused_with_its_line_and_the_old_config_serves() {
    let a = Backend::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let good = simple_config(&[&a], "", "");
    let (proxy, path) = start_on_file(dir.path(), &good).await;
    let reloader = proxy.running().reloader.clone();
    let bad = good.replace("farm = \"farm\"", "farm = \"missing\"");
    let line = bad.lines().position(|l| l.contains("\"missing\"")).unwrap() + 1;
    write_config(&path, &bad);
    let err = reloader.reload().await.expect_err("refused");
    assert!(
        err.contains(&format!("farmgate.toml:{line}:")) && err.contains("rules[0].farm"),
        "{err}"
    );
    let mut client = Client::connect(proxy.addr).await;
    assert_eq!(served_by(&mut client).await, "a");
    // What needs a restart is refused whole, naming it.
    write_config(
        &path,
        &good.replace("format = \"off\"", "format = \"json\""),
    );
    let err = reloader.reload().await.expect_err("refused");
    assert!(
        err.contains("access_log changed, which needs a restart"),
        "{err}"
    );
    assert_eq!(served_by(&mut client).await, "a");
}

#[tokio::test]
async fn member_state_and_counters_persist_across_a_reload() {
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    let dir = tempfile::tempdir().unwrap();
    let (proxy, path) = start_on_file(dir.path(), &simple_config(&[&a, &b], "", "")).await;
    let mut client = Client::connect(proxy.addr).await;
    for _ in 0..4 {
        served_by(&mut client).await;
    }
    let b_member = proxy.farm("farm").member("b").unwrap();
    b_member.set_admin(MemberState::Draining, "drained for the test");
    write_config(&path, &simple_config(&[&a, &b, &c], "", ""));
    proxy.running().reloader.reload().await.expect("reloads");
    let farm = proxy.farm("farm");
    assert_eq!(farm.members().len(), 3);
    let b_now = farm.member("b").unwrap();
    assert_eq!(
        b_now.state(),
        MemberState::Draining,
        "drain survives the reload"
    );
    assert_eq!(
        b_now
            .stats
            .requests
            .load(std::sync::atomic::Ordering::SeqCst),
        2
    );
    for _ in 0..6 {
        assert_ne!(served_by(&mut client).await, "b");
    }
    // A member whose address changed is a new member.
    write_config(
        &path,
        &simple_config(&[&a, &c], "", "").replace("name = \"c\"", "name = \"b\""),
    );
    proxy.running().reloader.reload().await.expect("reloads");
    assert_eq!(
        proxy.farm("farm").member("b").unwrap().state(),
        MemberState::Active
    );
}

#[tokio::test]
async fn requests_in_flight_finish_on_the_generation_they_started_on() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let dir = tempfile::tempdir().unwrap();
    let (proxy, path) = start_on_file(dir.path(), &simple_config(&[&a], "", "")).await;
    let addr = proxy.addr;
    let held = tokio::spawn(async move { get_once(addr, "www.example.com", "/hold").await });
    eventually("the request reached a", || a.requests() == 1).await;
    write_config(&path, &simple_config(&[&b], "", ""));
    proxy.running().reloader.reload().await.expect("reloads");
    let mut client = Client::connect(proxy.addr).await;
    assert_eq!(served_by(&mut client).await, "b");
    a.open_gate();
    let answer = bounded("held request", held).await.unwrap();
    assert_eq!(
        (answer.status.as_u16(), answer.text().as_str()),
        (200, "released")
    );
}

#[tokio::test]
async fn the_admin_api_reloads_and_reports_errors() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let dir = tempfile::tempdir().unwrap();
    let admin_section = &format!("[admin]\nbind = \"127.0.0.1:0\"\ntoken_env = \"{UNSET_ENV}\"\n");
    let text = simple_config(&[&a], "", "") + admin_section;
    let (proxy, path) = start_on_linked_file(dir.path(), &text).await;
    let admin = proxy.running().admin.unwrap();
    let post = |addr| async move {
        let req = http::Request::post("/api/reload")
            .header("host", "admin")
            .body(empty())
            .unwrap();
        Client::connect(addr).await.request(req).await
    };
    let mut client = Client::connect(proxy.addr).await;
    assert_eq!(served_by(&mut client).await, "a");
    // The farm's member changes from a to b; the API's reload applies it.
    let text = simple_config(&[&b], "", "") + admin_section;
    write_config(&path, &text);
    let r = post(admin).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mut client = Client::connect(proxy.addr).await;
    assert_eq!(served_by(&mut client).await, "b");
    write_config(
        &path,
        &text.replace("[proxy]", "[proxy]\nconnect_timeout = \"ten\""),
    );
    let r = post(admin).await;
    assert_eq!(r.status, 422);
    assert!(r.text().contains("invalid duration"), "{}", r.text());
}

/// `simple_config` with one more listener named `name` on a free loopback port.
fn with_listener(config: &str, name: &str, bind: &str) -> String {
    config.replacen(
        "[[rules]]",
        &format!("[[listeners]]\nname = \"{name}\"\nbind = \"{bind}\"\n[[rules]]"),
        1,
    )
}

#[tokio::test]
async fn listeners_are_added_removed_and_restarted_without_disturbing_the_others() {
    let a = Backend::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let base = simple_config(&[&a], "", "");
    let (proxy, path) =
        start_on_linked_file(dir.path(), &with_listener(&base, "second", "127.0.0.1:0")).await;
    let running = proxy.running();
    let second = running.addr("second").expect("second listener");
    let mut kept = Client::connect(proxy.addr).await;
    assert_eq!(served_by(&mut kept).await, "a");
    assert_eq!(get_once(second, "www.example.com", "/").await.status, 200);

    // "second" goes, "third" comes; "web" is not touched.
    write_config(&path, &with_listener(&base, "third", "127.0.0.1:0"));
    let summary = running.reloader.reload().await.expect("reloads");
    assert!(
        summary.contains("1 added, 1 removed, 0 restarted, 1 unchanged"),
        "{summary}"
    );
    assert_eq!(running.addr("web"), Some(proxy.addr));
    assert_eq!(running.addr("second"), None);
    let third = running.addr("third").expect("third listener");
    assert_eq!(get_once(third, "www.example.com", "/").await.status, 200);
    // The keep-alive connection opened before the reload still serves.
    for _ in 0..3 {
        assert_eq!(served_by(&mut kept).await, "a");
    }
    bounded("the removed listener closes its socket", async {
        while tokio::net::TcpStream::connect(second).await.is_ok() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;

    // An address that cannot be bound refuses the whole reload.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    write_config(&path, &with_listener(&base, "fourth", &taken_addr));
    let err = running.reloader.reload().await.expect_err("refused");
    assert!(
        err.contains("listener \"fourth\"") && err.contains("cannot bind"),
        "{err}"
    );
    assert!(running.addr("third").is_some(), "nothing was applied");
    assert_eq!(get_once(third, "www.example.com", "/").await.status, 200);

    // Client limits changed: every loop restarts on its own socket, and applies the new limit.
    let many_headers = || {
        let mut req = http::Request::get("/").header("host", "www.example.com");
        for i in 0..10 {
            req = req.header(format!("x-h{i}"), "v");
        }
        req.body(empty()).unwrap()
    };
    for addr in [proxy.addr, third] {
        let r = Client::connect(addr).await.request(many_headers()).await;
        assert_eq!(r.status, 200, "before the reload");
    }
    write_config(
        &path,
        &with_listener(
            &simple_config(&[&a], "", "max_headers = 5"),
            "third",
            "127.0.0.1:0",
        ),
    );
    let summary = running.reloader.reload().await.expect("reloads");
    assert!(
        summary.contains("0 added, 0 removed, 2 restarted"),
        "{summary}"
    );
    assert_eq!(running.addr("web"), Some(proxy.addr));
    assert_eq!(running.addr("third"), Some(third));
    assert_eq!(
        get_once(proxy.addr, "www.example.com", "/").await.status,
        200
    );
    assert_eq!(get_once(third, "www.example.com", "/").await.status, 200);
    for addr in [proxy.addr, third] {
        let r = Client::connect(addr).await.request(many_headers()).await;
        assert_eq!(r.status, 431, "the restarted listener keeps the old limit");
    }
}

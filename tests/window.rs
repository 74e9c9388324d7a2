//! The real window, driven through WebDriver: tauri-driver + WebKitWebDriver
//! under Xvfb. The console starts with an empty data directory, so it runs its
//! embedded gateway; the test sees it online and chosen (the only gateway),
//! starts the demo traffic, sees its streams' rates move and the charts
//! drawn, disconnects it and sees it go; at 1280x720 every action of every
//! view can be reached; after a restart the view and the choice are back. A
//! screenshot of every view is saved in target/screenshots/ (copied to
//! docs/screenshots/ by hand).

mod desktop;

use desktop::{
    Desktop, choose, click, click_css, save_screenshot, set_value, texts, wait_css, wait_css_text,
    wait_text,
};
use fantoccini::Locator;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
async fn console_window_end_to_end() {
    let data = std::env::temp_dir().join(format!("vdi-window-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).unwrap();
    let Some(desktop) = Desktop::start(None, &data) else {
        return;
    };
    let c = desktop.connect().await;

    // The embedded gateway shows up online in the fleet view.
    let row = c
        .wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Css(
            r#".fleet-row[data-name="local (embedded)"] .dot.up"#,
        ))
        .await
        .expect("the embedded gateway online");
    drop(row);
    let summary = c
        .find(Locator::Id("fleet-summary"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(summary.starts_with("1 gateways, 1 reachable"), "{summary}");
    // The only gateway is the choice: its sparklines are there.
    wait_css(
        &c,
        r#".fleet-row[aria-selected="true"] td.trend svg.spark.streams"#,
        Duration::from_secs(10),
    )
    .await;

    // The demo traffic, seen live in the connections view: no gateway to
    // choose first, four streams whose rates move, and the live chart.
    click(&c, "demo-tunnel").await;
    let notice = c
        .wait()
        .for_element(Locator::Id("notice"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(notice.starts_with("Demo tunnel"), "{notice}");
    wait_css_text(&c, "#demo-stop", Duration::from_secs(10), |t| {
        t.contains("4 streams")
    })
    .await;
    click(&c, "nav-connections").await;
    wait_css(&c, ".tunnel-row", Duration::from_secs(10)).await;
    let rates = |c: fantoccini::Client| async move { texts(&c, ".stream-rate").await };
    let t = Instant::now();
    let first = loop {
        let r = rates(c.clone()).await;
        if r.len() == 4
            && r.iter().all(|t| t.contains("B/s"))
            && r.iter().any(|t| !t.contains("↑ 0 B/s"))
        {
            break r;
        }
        assert!(t.elapsed() < Duration::from_secs(15), "stream rates: {r:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let t = Instant::now();
    while rates(c.clone()).await == first {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "the rates do not move: {first:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let tunnel_rate = c
        .find(Locator::Css(".tunnel-rate"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(tunnel_rate.starts_with('↑'), "{tunnel_rate}");
    wait_css(
        &c,
        r#"#live-chart svg.spark path.line[d^="M"]"#,
        Duration::from_secs(10),
    )
    .await;
    let text = c
        .find(Locator::Id("connections-table"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("demo-desktop"), "{text}");
    save_screenshot(&c, "connections.png").await;
    // The filter hides what does not match and shows it again.
    let filter = c.find(Locator::Id("connections-filter")).await.unwrap();
    filter.send_keys("no-such-vm").await.unwrap();
    let t = Instant::now();
    while c.find(Locator::Css(".tunnel-row")).await.is_ok() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the filter did not hide the tunnel"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    set_value(&c, &filter, "demo").await;
    c.wait()
        .at_most(Duration::from_secs(5))
        .for_element(Locator::Css(".tunnel-row"))
        .await
        .expect("shown again");

    // Disconnect it (with confirmation) and see it go.
    c.find(Locator::Css(".disconnect-tunnel"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.accept_alert().await.expect("a confirmation dialog");
    let t = Instant::now();
    while c.find(Locator::Css(".tunnel-row")).await.is_ok() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the tunnel is still listed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let s = c
        .find(Locator::Id("connections-summary"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(s, "0 tunnels, 0 streams");
    // Its streams went with the tunnel: the demo offers to start again.
    click(&c, "nav-fleet").await;
    wait_css(&c, "#demo-tunnel", Duration::from_secs(10)).await;
    click(&c, "nav-connections").await;

    // Drain the gateway (with confirmation): the fleet says "drained" and
    // counts it; undrain takes it back.
    click(&c, "drain").await;
    c.accept_alert().await.expect("a confirmation dialog");
    let notice = wait_text(&c, "notice", |t| t.starts_with("Drained")).await;
    assert!(notice.contains("new tunnels go to other nodes"), "{notice}");
    click(&c, "nav-fleet").await;
    wait_css_text(&c, ".fleet-row .enabled", Duration::from_secs(15), |t| {
        t == "drained"
    })
    .await;
    let summary = wait_text(&c, "fleet-summary", |t| t.contains("1 draining")).await;
    assert!(summary.contains("1 reachable"), "{summary}");
    click(&c, "nav-connections").await;
    // The toolbar comes with the view's first answer: wait for it.
    click_css(&c, "#undrain").await;
    wait_text(&c, "notice", |t| t.starts_with("Undrained")).await;
    click(&c, "nav-fleet").await;
    wait_css_text(&c, ".fleet-row .enabled", Duration::from_secs(15), |t| {
        t == "yes"
    })
    .await;
    click(&c, "nav-connections").await;

    // Settings: a bad value is refused inline by the gateway's own rules; a good
    // one is applied and found changed on the gateway.
    click(&c, "nav-settings").await;
    let port = c
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Id("set-api_port"))
        .await
        .unwrap();
    set_value(&c, &port, "0").await;
    let errors = c
        .find(Locator::Css("#settings-table"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(errors.contains("0 is out of range 1..=65535"), "{errors}");
    let apply = c.find(Locator::Id("settings-apply")).await.unwrap();
    assert!(
        apply.attr("disabled").await.unwrap().is_some(),
        "Apply is disabled while a field is invalid"
    );
    click(&c, "settings-reset").await;
    // Host-local fields are marked; the embedded gateway has no SSH host, so
    // they are locked, with the reason.
    // (Reset re-renders the table: wait until it is back.)
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let badges = c
            .find_all(Locator::Css("#settings-table .badge.host-local"))
            .await
            .unwrap();
        if badges.len() == vdi_wire::HOST_LOCAL_FIELDS.len() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} host-local badges, want {}",
            badges.len(),
            vdi_wire::HOST_LOCAL_FIELDS.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let socket = c
        .find(Locator::Id("set-haproxy_admin_socket"))
        .await
        .unwrap();
    assert!(
        socket.attr("disabled").await.unwrap().is_some(),
        "locked without an SSH host"
    );
    wait_text(&c, "host-local-note", |t| {
        t.contains(vdi_wire::console::NO_SSH_FOR_HOST_LOCAL)
    })
    .await;
    let ttl = c
        .wait()
        .for_element(Locator::Id("set-tunnel_ttl_secs"))
        .await
        .unwrap();
    set_value(&c, &ttl, "300").await;
    let pending = c
        .find(Locator::Id("settings-pending"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        pending.contains("tunnel_ttl_secs: default → 300"),
        "{pending}"
    );
    save_screenshot(&c, "settings.png").await;
    click(&c, "settings-apply").await;
    wait_text(&c, "notice", |n| n == "Changed: tunnel_ttl_secs").await;
    let stored = vdi_gateway::Store::open(data.join("embedded/settings.db"))
        .unwrap()
        .load()
        .unwrap();
    assert_eq!(stored.tunnel_ttl_secs, Some(300));

    // Fleet inventory from the UI: a bad URL is refused per field, a good one
    // adds a row (unreachable: nothing listens there), Remove takes it away.
    click(&c, "nav-fleet").await;
    click(&c, "add-gateway").await;
    c.wait()
        .for_element(Locator::Id("gw-name"))
        .await
        .unwrap()
        .send_keys("lab-1")
        .await
        .unwrap();
    let url = c.find(Locator::Id("gw-api_url")).await.unwrap();
    url.send_keys("ftp://10.0.0.1").await.unwrap();
    click(&c, "gateway-save").await;
    wait_text(&c, "gateway-form", |f| f.contains("must start with http")).await;
    set_value(&c, &url, "http://127.0.0.1:9").await;
    let typed = c
        .execute(
            "return document.getElementById('gw-api_url').value;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(typed, "http://127.0.0.1:9");
    click(&c, "gateway-save").await;
    if let Err(e) = c
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(r#".fleet-row[data-name="lab-1"] .dot.down"#))
        .await
    {
        save_screenshot(&c, "failure.png").await;
        panic!(
            "the new gateway is not listed as unreachable ({e}); see target/screenshots/failure.png"
        );
    }
    save_screenshot(&c, "fleet-two.png").await;
    // The table's rows are recycled places: after a filter each place shows
    // all of its new gateway (name, checkbox, state), and back again.
    let client = &c;
    let rows_now = move || async move {
        client.execute(
            r#"return [...document.querySelectorAll('#fleet-table .fleet-row')].map(r => [
                r.dataset.name,
                r.querySelector('.bulk-pick').getAttribute('aria-label'),
                r.querySelector('td:nth-child(2)').textContent.split(' ')[0],
                r.querySelector('.dot.down') ? 'down' : r.querySelector('.dot.up, .dot.warn') ? 'up' : '?']);"#,
            vec![],
        )
        .await
        .unwrap()
    };
    let filter = c.find(Locator::Css("#fleet-filter")).await.unwrap();
    let both = serde_json::json!([
        ["lab-1", "choose lab-1", "lab-1", "down"],
        ["local (embedded)", "choose local (embedded)", "local", "up"]
    ]);
    assert_eq!(rows_now().await, both);
    for (text, want) in [
        ("local", serde_json::json!([both[1]])),
        ("lab", serde_json::json!([both[0]])),
        ("", both.clone()),
    ] {
        set_value(&c, &filter, text).await;
        // The table's count changes in the same reactive turn as its rows:
        // once it says so, every place shows its new gateway (a push, every
        // 2 s, must not be what fixes it).
        let n = want.as_array().unwrap().len();
        wait_css(
            &c,
            &format!(r#"#fleet-table[data-shown="{n}"]"#),
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(rows_now().await, want, "filter {text:?}");
    }
    c.find(Locator::Css(
        r#".fleet-row[data-name="lab-1"] .remove-gateway"#,
    ))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    c.accept_alert().await.expect("a confirmation dialog");
    let t = Instant::now();
    while c
        .find(Locator::Css(r#".fleet-row[data-name="lab-1"]"#))
        .await
        .is_ok()
    {
        assert!(t.elapsed() < Duration::from_secs(10), "lab-1 still listed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Bulk: a second real gateway (its own loopback address) added from the
    // form, both chosen; a setting and a key rotation previewed per host,
    // then applied one host at a time; each host has its own new key.
    let lab = vdi_gateway::testing::LocalGateway::start(serde_json::json!({}))
        .await
        .unwrap();
    let lab_cli = lab.handle.cli_key();
    let embedded_cli = vdi_gateway::Store::open(data.join("embedded/settings.db"))
        .unwrap()
        .load()
        .unwrap()
        .cli_key;
    click(&c, "add-gateway").await;
    for (f, v) in [
        ("gw-name", "lab-2".to_string()),
        ("gw-api_url", lab.handle.api_url()),
        ("gw-api_key", lab.handle.api_key()),
        ("gw-tags", "lab".to_string()),
    ] {
        let e = c.wait().for_element(Locator::Id(f)).await.unwrap();
        set_value(&c, &e, &v).await;
    }
    click(&c, "gateway-save").await;
    wait_css(
        &c,
        r#".fleet-row[data-name="lab-2"] .dot.up"#,
        Duration::from_secs(15),
    )
    .await;
    click_css(&c, "#bulk-all").await;
    wait_css_text(&c, "#bulk-hosts", Duration::from_secs(5), |t| {
        t == "lab-2, local (embedded)"
    })
    .await;
    choose(&c, "bulk-field", "tunnel_idle_secs").await;
    let value = c.find(Locator::Id("bulk-value")).await.unwrap();
    set_value(&c, &value, "90").await;
    click_css(&c, "#bulk-rotate-cli_key").await;
    click(&c, "bulk-preview").await;
    let plan = wait_css_text(&c, "#bulk-plan", Duration::from_secs(10), |t| {
        t.contains("lab-2") && t.contains("local (embedded)")
    })
    .await;
    let rows = texts(&c, "#bulk-plan tr.plan-host").await;
    let new_key = vdi_console::bulk::NEW_RANDOM_KEY;
    let dots = "•".repeat(8);
    let cells: Vec<Vec<&str>> = rows.iter().map(|r| r.split('\t').collect()).collect();
    assert_eq!(
        cells,
        [
            ["lab-2", "cli_key", &dots, new_key],
            ["lab-2", "tunnel_idle_secs", "default", "90"],
            ["local (embedded)", "cli_key", &dots, new_key],
            ["local (embedded)", "tunnel_idle_secs", "default", "90"],
        ],
        "two fields on each of two hosts, in the roll's order: {plan}"
    );
    assert!(
        !plan.contains(&lab_cli) && !plan.contains(embedded_cli.expose()),
        "{plan}"
    );
    save_screenshot(&c, "bulk.png").await;
    click(&c, "bulk-apply").await;
    wait_text(&c, "notice", |t| t == "Settings change: 2 host(s) done").await;
    let done = c
        .find_all(Locator::Css("#bulk-results li.bulk-ok"))
        .await
        .unwrap();
    assert_eq!(done.len(), 2);
    let lab_now = lab.handle.gateway().current();
    let embedded_now = vdi_gateway::Store::open(data.join("embedded/settings.db"))
        .unwrap()
        .load()
        .unwrap();
    assert_eq!(lab_now.tunnel_idle_secs, Some(90));
    assert_eq!(embedded_now.tunnel_idle_secs, Some(90));
    assert_ne!(lab_now.cli_key.expose(), lab_cli);
    assert_ne!(embedded_now.cli_key, embedded_cli);
    assert_ne!(embedded_now.cli_key, lab_now.cli_key);
    save_screenshot(&c, "bulk-applied.png").await;

    // 1280x720: every button, field and choice of every view can be reached
    // (scrolled into view, it is on screen and nothing covers it).
    c.set_window_size(1280, 720).await.unwrap();
    click(&c, "demo-tunnel").await;
    for (nav, wait) in [
        ("nav-fleet", ".fleet-row .edit-gateway"),
        ("nav-connections", ".disconnect-tunnel"),
        ("nav-settings", "#settings-apply"),
        ("nav-services", "main"),
        ("nav-journal", "main"),
        ("nav-config", "main"),
        ("nav-audit", "main"),
    ] {
        click(&c, nav).await;
        wait_css(&c, wait, Duration::from_secs(10)).await;
        let hidden = c
            .execute(
                r#"const out = [];
                for (const e of document.querySelectorAll('header button, header select, main button, main input, main select')) {
                    if (e.offsetParent === null) continue;
                    e.scrollIntoView({block: 'center', inline: 'center'});
                    const r = e.getBoundingClientRect();
                    const x = r.left + r.width / 2, y = r.top + r.height / 2;
                    const on = x >= 0 && y >= 0 && x <= innerWidth && y <= innerHeight;
                    const top = on && document.elementFromPoint(x, y);
                    if (!on || !(top === e || e.contains(top))) out.push(e.id || e.className || e.textContent);
                }
                return out;"#,
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(
            hidden,
            serde_json::json!([]),
            "{nav}: out of reach at 1280x720"
        );
        let name = nav.trim_start_matches("nav-");
        save_screenshot(&c, &format!("{name}-1280x720.png")).await;
    }
    // The view and the choice survive a restart.
    click(&c, "nav-connections").await;
    wait_css(&c, ".tunnel-row", Duration::from_secs(10)).await;
    c.close().await.unwrap();
    drop(desktop);
    let desktop = Desktop::start(None, &data).unwrap();
    let c = desktop.connect().await;
    wait_css(
        &c,
        r#"#nav-connections[aria-current="page"]"#,
        Duration::from_secs(15),
    )
    .await;
    // A new embedded gateway process: none of the old tunnels, and no
    // "choose a gateway" either.
    wait_css_text(&c, "#connections-summary", Duration::from_secs(15), |t| {
        t == "0 tunnels, 0 streams"
    })
    .await;
    c.close().await.unwrap();
    let _ = std::fs::remove_dir_all(&data);
}

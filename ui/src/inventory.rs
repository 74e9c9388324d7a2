//! Adding, editing and removing gateways of the fleet. Keys typed here go to
//! the OS keyring (through the backend); an empty key field keeps the stored one.

use crate::api;
use leptos::prelude::*;
use leptos::task::spawn_local;
use vdi_wire::FieldError;
use vdi_wire::console::{ConsoleError, GatewayDraft, GatewayEntry, SshAuth};

/// The form: `editing` is `None` for a new gateway.
#[component]
pub fn GatewayForm(
    editing: Option<GatewayEntry>,
    on_done: Callback<Option<String>>,
) -> impl IntoView {
    let e = editing.clone();
    let text = |v: Option<String>| RwSignal::new(v.unwrap_or_default());
    let name = text(e.as_ref().map(|g| g.name.clone()));
    let api_url = text(e.as_ref().map(|g| g.api_url.clone()));
    let tags = text(e.as_ref().map(|g| g.tags.join(", ")));
    let ssh_host = text(e.as_ref().and_then(|g| g.ssh_host.clone()));
    let ssh_port = text(e.as_ref().map(|g| g.ssh_port.to_string()));
    let ssh_user = text(e.as_ref().map(|g| g.ssh_user.clone()));
    let ssh_jump = text(e.as_ref().and_then(|g| g.ssh_jump.clone()));
    let (auth0, key0) = match e.as_ref().map(|g| g.ssh_auth.clone()) {
        Some(SshAuth::KeyFile { path }) => ("key_file", path),
        Some(SshAuth::Password) => ("password", String::new()),
        _ => ("agent", String::new()),
    };
    let auth = RwSignal::new(auth0.to_string());
    let key_path = RwSignal::new(key0);
    let api_key = RwSignal::new(String::new());
    let cli_key = RwSignal::new(String::new());
    let password = RwSignal::new(String::new());
    let errors = RwSignal::new(Vec::<FieldError>::new());
    let message = RwSignal::new(None::<ConsoleError>);
    let id = e.as_ref().map(|g| g.id);
    let keys_note = e.as_ref().map(|g| {
        format!(
            "Stored: api_key {}, cli_key {}. Leave a key empty to keep it.",
            if g.has_api_key { "yes" } else { "no" },
            if g.has_cli_key { "yes" } else { "no" }
        )
    });
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let opt = |s: RwSignal<String>| Some(s.get_untracked()).filter(|v| !v.trim().is_empty());
        let draft = GatewayDraft {
            name: name.get_untracked(),
            api_url: api_url.get_untracked(),
            ssh_host: opt(ssh_host),
            ssh_port: ssh_port.get_untracked().trim().parse().ok(),
            ssh_user: opt(ssh_user),
            ssh_jump: opt(ssh_jump),
            ssh_auth: Some(match auth.get_untracked().as_str() {
                "key_file" => SshAuth::KeyFile {
                    path: key_path.get_untracked(),
                },
                "password" => SshAuth::Password,
                _ => SshAuth::Agent,
            }),
            tags: tags
                .get_untracked()
                .split(',')
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
                .collect(),
            api_key: opt(api_key).map(Into::into),
            cli_key: opt(cli_key).map(Into::into),
            ssh_password: opt(password).map(Into::into),
        };
        spawn_local(async move {
            let r = match id {
                Some(id) => api::fleet_update(id, &draft).await,
                None => api::fleet_add(&draft).await,
            };
            match r {
                Ok(g) => on_done.run(Some(format!("Saved {}", g.name))),
                Err(e) => {
                    errors.set(e.fields.clone());
                    message.set(Some(e));
                }
            }
        });
    };
    let err = move |f: &'static str| {
        errors
            .get()
            .into_iter()
            .filter(|e| e.field == f)
            .map(|e| e.message)
            .collect::<Vec<_>>()
            .join("; ")
    };
    let field =
        move |label: &'static str, f: &'static str, sig: RwSignal<String>, kind: &'static str| {
            view! {
                <tr>
                    <td><label for=format!("gw-{f}")>{label}</label></td>
                    <td>
                        <input id=format!("gw-{f}") type=kind size="40" prop:value=move || sig.get()
                            on:input=move |e| sig.set(event_target_value(&e))/>
                        <span class="error field-error">{move || err(f)}</span>
                    </td>
                </tr>
            }
        };
    view! {
        <form id="gateway-form" on:submit=submit>
            <h2>{if id.is_some() { "Edit gateway" } else { "Add a gateway" }}</h2>
            {move || message.get().map(|m| view! { <p class="error" role="alert">{m.message}</p> })}
            <table>
                <tbody>
                    {field("Name", "name", name, "text")}
                    {field("API base URL", "api_url", api_url, "text")}
                    {field("api_key", "api_key", api_key, "password")}
                    {field("cli_key", "cli_key", cli_key, "password")}
                    {field("Tags (comma separated)", "tags", tags, "text")}
                    {field("SSH host", "ssh_host", ssh_host, "text")}
                    {field("SSH port", "ssh_port", ssh_port, "text")}
                    {field("SSH user", "ssh_user", ssh_user, "text")}
                    {field("Jump host ([user@]host[:port])", "ssh_jump", ssh_jump, "text")}
                    <tr>
                        <td><label for="gw-ssh_auth">"SSH login"</label></td>
                        <td>
                            <select id="gw-ssh_auth" on:change=move |e| auth.set(event_target_value(&e)) prop:value=move || auth.get()>
                                <option value="agent">"ssh-agent"</option>
                                <option value="key_file">"key file"</option>
                                <option value="password">"password"</option>
                            </select>
                            <span class="error field-error">{move || err("ssh_auth")}</span>
                        </td>
                    </tr>
                    <Show when=move || auth.get() == "key_file">{field("Key file", "key_path", key_path, "text")}</Show>
                    <Show when=move || auth.get() == "password">{field("SSH password", "ssh_password", password, "password")}</Show>
                </tbody>
            </table>
            <p class="muted">{keys_note.clone()}</p>
            <div class="toolbar">
                <button class="action" type="submit" id="gateway-save">"Save"</button>
                <button class="plain" type="button" on:click=move |_| on_done.run(None)>"Cancel"</button>
            </div>
        </form>
    }
}

/// Removes a gateway after a confirmation; reports in `notice`.
pub fn remove(id: i64, name: String) {
    let ctx = crate::pane::Ctx::get();
    if !window()
        .confirm_with_message(&format!(
            "Remove {name} from the fleet (and its stored keys)?"
        ))
        .unwrap_or(false)
    {
        return;
    }
    spawn_local(async move {
        ctx.say(
            api::fleet_remove(id)
                .await
                .map(|()| format!("Removed {name}")),
        );
    });
}

/// Loads the entry to edit (the fleet rows do not carry SSH details).
pub async fn entry(id: i64) -> Option<GatewayEntry> {
    api::fleet_list()
        .await
        .ok()?
        .into_iter()
        .find(|g| g.id == id)
}

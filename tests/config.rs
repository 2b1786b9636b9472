//! The repository's `gerdu.toml` loads, validates, and documents exactly the
//! built-in defaults (so it cannot drift from the code).

use figment::providers::{Format, Toml};

fn repo_toml() -> figment::Figment {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/gerdu.toml");
    gerdu::config::figment(Some(std::path::Path::new(path)), &[], serde_json::json!({}))
}

#[test]
fn repo_gerdu_toml_is_valid_and_equals_the_defaults() {
    let f = repo_toml();
    let core = gerdu::config::CoreConfig::from_figment(&f).expect("valid");
    let builtin = gerdu::config::figment(None, &[], serde_json::json!({}));
    assert_eq!(core, gerdu::config::CoreConfig::from_figment(&builtin).unwrap());
    gerdu::server::validate(&f).expect("every plugin section is valid");
    let http: gerdu_protocol_http::HttpConfig = f.extract_inner("http").unwrap();
    let d = gerdu_protocol_http::HttpConfig::default();
    assert_eq!(
        (http.port, http.max_body, http.max_key, http.max_connections),
        (d.port, d.max_body, d.max_key, d.max_connections)
    );
    assert_eq!(http.header_timeout_ms, d.header_timeout_ms);
}

#[test]
fn every_core_key_is_documented_in_gerdu_toml() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/gerdu.toml")).unwrap();
    let defaults = toml::Value::try_from(gerdu::config::CoreConfig::default()).unwrap();
    for (key, value) in defaults.as_table().unwrap() {
        match value {
            toml::Value::Table(t) => {
                assert!(text.contains(&format!("[{key}]")), "section [{key}] documented");
                for sub in t.keys() {
                    assert!(
                        text.contains(&format!("\n{sub} =")) || text.contains(&format!("# {sub} =")),
                        "{key}.{sub}"
                    );
                }
            }
            _ => assert!(text.contains(&format!("\n{key} =")), "{key} documented"),
        }
    }
    // Optional keys are documented commented out.
    for key in ["cert", "key", "join", "storage"] {
        assert!(text.contains(&format!("# {key} =")), "{key} documented");
    }
}

#[test]
fn plugin_sections_are_checked() {
    let bad = repo_toml().merge(Toml::string("[lru]\nshards = \"many\"\n"));
    let err = gerdu::server::validate(&bad).err().expect("invalid");
    assert!(err.to_string().contains("lru.shards"), "{err}");
}

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
    plugin_section_is_documented_with_its_defaults(&f, "http", gerdu_protocol_http::HttpConfig::default());
    plugin_section_is_documented_with_its_defaults(&f, "redis", gerdu_protocol_redis::RedisConfig::default());
    plugin_section_is_documented_with_its_defaults(&f, "mcd", gerdu_protocol_memcached::McdConfig::default());
    plugin_section_is_documented_with_its_defaults(&f, "weak", gerdu_policy_weak::WeakConfig::default());
}

/// `[name]` is in the file, with every key of `default`, and equals it.
fn plugin_section_is_documented_with_its_defaults<T>(f: &figment::Figment, name: &str, default: T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/gerdu.toml")).unwrap();
    assert!(text.contains(&format!("\n[{name}]\n")), "section [{name}] documented");
    let section = &text[text.find(&format!("\n[{name}]\n")).unwrap()..];
    let section = &section[..section[1..].find("\n[").map_or(section.len(), |i| i + 1)];
    for key in toml::Value::try_from(&default).unwrap().as_table().unwrap().keys() {
        assert!(section.contains(&format!("\n{key} =")), "{name}.{key} documented");
    }
    let in_file: T = f.extract_inner(name).unwrap();
    assert_eq!(in_file, default, "[{name}] in gerdu.toml equals the built-in defaults");
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

#[test]
fn raft_timings_are_checked() {
    for (lines, ok) in [
        ("heartbeat_ms = 0", false),
        ("heartbeat_ms = 500", false),
        ("election_timeout_max_ms = 500", false),
        ("max_batch = 0", false),
        ("leader_wait_ms = 0", true),
        ("heartbeat_ms = 1\nelection_timeout_min_ms = 2\nelection_timeout_max_ms = 3", true),
    ] {
        let cfg = repo_toml().merge(Toml::string(&format!("[raft]\n{lines}\n")));
        let result = gerdu::server::validate(&cfg);
        assert_eq!(result.is_ok(), ok, "{lines}: {:?}", result.err().map(|e| e.to_string()));
    }
}

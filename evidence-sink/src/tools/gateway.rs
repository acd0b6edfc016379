//! From the operator's gateway configuration (`config/gateway.yaml`) to the filter's plugin
//! configuration JSON, checked by the filter's own code.
//!
//! The gateway YAML has the fields of `mercator_filter::config::PluginConfig`, with two
//! differences that keep files apart from the configuration:
//!
//! - `policies_dir: <dir>` instead of `policies: {modules: […]}`. Every `*.rego` file under
//!   the directory, its subdirectories (such as `lib/`) included, except the `*_test.rego`
//!   files and anything under an `examples/` directory, becomes a module whose path is
//!   `<dir name>/<relative path>`, sorted by that path (see [`policy_modules`]);
//! - `api_key_files: [<file>, …]`, each a YAML list of API key entries (the fields of
//!   `ApiKeyConfig`), appended to `api_keys`.
//!
//! Both paths are relative to the directory of the gateway YAML. The result is parsed with
//! `PluginConfig::from_json` and checked with `PluginConfig::check`, so unknown fields, bad
//! key hashes and policies that do not compile stop here, with the filter's own messages,
//! before Envoy ever sees them.

use std::fs;
use std::path::{Path, PathBuf};

use mercator_filter::config::{ApiKeyConfig, ConfigError, PluginConfig};
use mercator_filter::policy::PolicyModule;
use serde_json::{Map, Value};

use super::files::read_text;
use super::ToolError;

/// The plugin configuration made from a gateway YAML.
#[derive(Debug, Clone)]
pub struct PluginConfigJson {
    /// The configuration as compact JSON, as the filter reads it.
    pub json: String,
    /// The policy bundle's digest, `sha256:…`, as evidence records name it.
    pub bundle_digest: String,
}

/// Where the entries of `api_keys` came from, to name the file when one is refused.
struct KeyOrigin {
    first_index: usize,
    count: usize,
    path: PathBuf,
}

/// Reads `gateway` (and the files it names) and returns the checked plugin configuration.
pub fn plugin_config(gateway: &Path) -> Result<PluginConfigJson, ToolError> {
    let Value::Object(mut root) = read_yaml(gateway)? else {
        return Err(field_error(
            gateway,
            "(top level)",
            "must be a mapping of configuration fields",
        ));
    };
    let base = base_dir(gateway);

    if root.contains_key("policies") {
        return Err(field_error(
            gateway,
            "policies",
            "write `policies_dir: <directory of .rego files>` instead; the tool reads the modules from there",
        ));
    }
    let policies_dir = match root.remove("policies_dir") {
        Some(Value::String(dir)) => base.join(dir),
        Some(_) => return Err(field_error(gateway, "policies_dir", "must be a path")),
        None => {
            return Err(field_error(
                gateway,
                "policies_dir",
                "missing; name the directory of .rego files, relative to this file",
            ))
        }
    };
    let modules = policy_modules(&policies_dir)?;
    root.insert(
        "policies".to_owned(),
        serde_json::json!({ "modules": modules_json(&modules) }),
    );

    let origins = append_api_key_files(gateway, &base, &mut root)?;

    let json = serde_json::to_string(&Value::Object(root)).map_err(|e| ToolError::Serialize {
        what: "the plugin configuration".to_owned(),
        reason: e.to_string(),
    })?;
    let refused = |source: ConfigError| ToolError::PluginConfig {
        path: gateway.to_owned(),
        origin: origin_of(&source, &origins),
        source,
    };
    let config = PluginConfig::from_json(json.as_bytes()).map_err(refused)?;
    let (_keys, policy) = config.check().map_err(refused)?;

    Ok(PluginConfigJson {
        json,
        bundle_digest: policy.digest().to_owned(),
    })
}

/// Policy examples live under a directory of this name: tested, but never in the bundle.
const EXAMPLES_DIR: &str = "examples";

/// The policy modules of `dir`: every `*.rego` file under it except `*_test.rego` and the
/// examples, sorted by path, each with the path `<dir name>/<relative path>` that the
/// bundle digest covers.
pub fn policy_modules(dir: &Path) -> Result<Vec<PolicyModule>, ToolError> {
    let modules: Vec<PolicyModule> = rego_files(dir)?
        .into_iter()
        .filter(|file| !file.name.ends_with("_test.rego") && !file.is_example)
        .map(RegoFile::into_module)
        .collect();
    if modules.is_empty() {
        return Err(ToolError::NoPolicies {
            dir: dir.to_owned(),
        });
    }
    Ok(modules)
}

/// One `.rego` file of a policy directory.
pub(crate) struct RegoFile {
    /// The path modules and messages use: `<dir name>/<file name>`.
    pub(crate) module_path: String,
    /// The file name.
    pub(crate) name: String,
    /// Whether it lies under an `examples/` directory.
    pub(crate) is_example: bool,
    /// The Rego source.
    pub(crate) source: String,
}

impl RegoFile {
    fn into_module(self) -> PolicyModule {
        PolicyModule {
            path: self.module_path,
            source: self.source,
        }
    }
}

/// Every `*.rego` file under `dir` (tests and examples included, subdirectories searched),
/// sorted by module path.
pub(crate) fn rego_files(dir: &Path) -> Result<Vec<RegoFile>, ToolError> {
    let mut files = Vec::new();
    collect_rego_files(dir, &dir_name(dir)?, false, &mut files)?;
    files.sort_by(|a, b| a.module_path.cmp(&b.module_path));
    Ok(files)
}

fn collect_rego_files(
    dir: &Path,
    prefix: &str,
    in_examples: bool,
    files: &mut Vec<RegoFile>,
) -> Result<(), ToolError> {
    let read_error = |source| ToolError::Read {
        path: dir.to_owned(),
        source,
    };
    for entry in fs::read_dir(dir).map_err(read_error)? {
        let path = entry.map_err(read_error)?.path();
        let Some(name) = path.file_name().and_then(|name| name.to_str()) else {
            continue;
        };
        // Hidden entries (editor files, `.git`) are not policies.
        if name.starts_with('.') {
            continue;
        }
        let module_path = format!("{prefix}/{name}");
        if path.is_dir() {
            let examples = in_examples || name == EXAMPLES_DIR;
            collect_rego_files(&path, &module_path, examples, files)?;
        } else if name.ends_with(".rego") && path.is_file() {
            files.push(RegoFile {
                module_path,
                name: name.to_owned(),
                is_example: in_examples,
                source: read_text(&path)?,
            });
        }
    }
    Ok(())
}

/// The last component of `dir` as written, or of its canonical form for `.` and `..`.
fn dir_name(dir: &Path) -> Result<String, ToolError> {
    let named = match dir.file_name() {
        Some(name) => Some(name.to_owned()),
        None => fs::canonicalize(dir)
            .map_err(|source| ToolError::Read {
                path: dir.to_owned(),
                source,
            })?
            .file_name()
            .map(ToOwned::to_owned),
    };
    named
        .and_then(|name| name.to_str().map(str::to_owned))
        .ok_or_else(|| ToolError::Read {
            path: dir.to_owned(),
            source: std::io::Error::other("the directory has no UTF-8 name to give its modules"),
        })
}

fn modules_json(modules: &[PolicyModule]) -> Value {
    modules
        .iter()
        .map(|module| serde_json::json!({ "path": module.path, "source": module.source }))
        .collect()
}

/// Moves the entries of every `api_key_files` file into `api_keys`.
fn append_api_key_files(
    gateway: &Path,
    base: &Path,
    root: &mut Map<String, Value>,
) -> Result<Vec<KeyOrigin>, ToolError> {
    let files = match root.remove("api_key_files") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(files)) => files,
        Some(_) => {
            return Err(field_error(
                gateway,
                "api_key_files",
                "must be a list of paths",
            ))
        }
    };

    let mut keys = match root.remove("api_keys") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(keys)) => keys,
        Some(_) => return Err(field_error(gateway, "api_keys", "must be a list")),
    };

    let mut origins = Vec::new();
    for (index, file) in files.iter().enumerate() {
        let Value::String(file) = file else {
            return Err(field_error(
                gateway,
                format!("api_key_files[{index}]"),
                "must be a path",
            ));
        };
        let path = base.join(file);
        let entries = read_api_key_file(gateway, &path)?;
        origins.push(KeyOrigin {
            first_index: keys.len(),
            count: entries.len(),
            path,
        });
        keys.extend(entries);
    }

    root.insert("api_keys".to_owned(), Value::Array(keys));
    Ok(origins)
}

/// The entries of one API key file, each checked to have the shape of `ApiKeyConfig`.
fn read_api_key_file(gateway: &Path, path: &Path) -> Result<Vec<Value>, ToolError> {
    if !path.exists() {
        return Err(ToolError::MissingApiKeyFile {
            path: path.to_owned(),
            gateway: gateway.to_owned(),
        });
    }
    let entries = match read_yaml(path)? {
        Value::Null => Vec::new(),
        Value::Array(entries) => entries,
        _ => {
            return Err(field_error(
                path,
                "(top level)",
                "must be a YAML list of API key entries (sha256, user_id, name, …)",
            ))
        }
    };
    for (index, entry) in entries.iter().enumerate() {
        serde_json::from_value::<ApiKeyConfig>(entry.clone())
            .map_err(|e| field_error(path, format!("[{index}]"), e.to_string()))?;
    }
    Ok(entries)
}

/// A YAML file as JSON values. It goes through YAML's own value type first, which refuses
/// a key given twice in one mapping: in a security setting the second must not silently
/// win over the first.
fn read_yaml(path: &Path) -> Result<Value, ToolError> {
    let text = read_text(path)?;
    let yaml_error = |source| ToolError::Yaml {
        path: path.to_owned(),
        source,
    };

    let mut document: serde_norway::Value = serde_norway::from_str(&text).map_err(yaml_error)?;
    document.apply_merge().map_err(yaml_error)?;
    serde_json::to_value(&document).map_err(|e| {
        field_error(
            path,
            "(top level)",
            format!("has a value that JSON cannot hold: {e}"),
        )
    })
}

/// ` (entry N of FILE)` when the filter refused an `api_keys` entry that came from a file.
fn origin_of(error: &ConfigError, origins: &[KeyOrigin]) -> String {
    let ConfigError::Invalid { field, .. } = error else {
        return String::new();
    };
    let Some(index) = field
        .strip_prefix("api_keys[")
        .and_then(|rest| rest.split(']').next())
        .and_then(|index| index.parse::<usize>().ok())
    else {
        return String::new();
    };
    origins
        .iter()
        .find(|origin| index >= origin.first_index && index < origin.first_index + origin.count)
        .map(|origin| {
            format!(
                " (entry {} of {})",
                index - origin.first_index,
                origin.path.display()
            )
        })
        .unwrap_or_default()
}

fn base_dir(file: &Path) -> PathBuf {
    match file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    }
}

fn field_error(path: &Path, field: impl Into<String>, reason: impl Into<String>) -> ToolError {
    ToolError::Field {
        path: path.to_owned(),
        field: field.into(),
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::api_key::api_key_sha256;

    const DEPARTMENT: &str = include_str!("../../../policies/department.rego");

    const GATEWAY: &str = "\
gateway_id: test-gateway
providers:
  openai: {api_key_env: OPENAI_API_KEY}
policies_dir: rego
api_keys:
  - sha256: SHA_INLINE
    user_id: inline-user
    name: inline-key
api_key_files: [keys/more.yaml]
evidence:
  sink_cluster: evidence_sink
";

    /// A directory with `gateway.yaml`, `rego/` (one policy, one test) and `keys/more.yaml`.
    fn layout() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir(root.join("rego")).unwrap();
        fs::write(root.join("rego/department.rego"), DEPARTMENT).unwrap();
        fs::write(root.join("rego/department_test.rego"), "not even rego").unwrap();
        fs::write(root.join("rego/README.md"), "not a module").unwrap();
        fs::create_dir(root.join("keys")).unwrap();
        let more = format!(
            "- sha256: {}\n  user_id: bob\n  name: bob-key\n  attributes: {{department: finance}}\n",
            api_key_sha256("mj_bob")
        );
        fs::write(root.join("keys/more.yaml"), more).unwrap();
        let gateway = GATEWAY.replace("SHA_INLINE", &api_key_sha256("mj_inline"));
        fs::write(root.join("gateway.yaml"), gateway).unwrap();
        dir
    }

    #[test]
    fn the_gateway_yaml_becomes_the_filters_configuration() {
        let dir = layout();

        let made = plugin_config(&dir.path().join("gateway.yaml")).unwrap();

        let json: Value = serde_json::from_str(&made.json).unwrap();
        assert_eq!(json["gateway_id"], "test-gateway");
        assert_eq!(
            json["policies"]["modules"][0]["path"],
            "rego/department.rego"
        );
        assert_eq!(json["policies"]["modules"][0]["source"], DEPARTMENT);
        assert_eq!(json["policies"]["modules"].as_array().unwrap().len(), 1);
        assert_eq!(json["api_keys"][0]["user_id"], "inline-user");
        assert_eq!(json["api_keys"][1]["user_id"], "bob");
        assert!(json.get("policies_dir").is_none());
        assert!(json.get("api_key_files").is_none());
        assert!(!made.json.contains('\n'));

        let modules = policy_modules(&dir.path().join("rego")).unwrap();
        assert_eq!(
            made.bundle_digest,
            mercator_filter::policy::bundle_digest(&modules)
        );
    }

    #[test]
    fn library_subdirectories_join_the_bundle_and_examples_do_not() {
        let dir = layout();
        let rego = dir.path().join("rego");
        fs::create_dir_all(rego.join("lib")).unwrap();
        fs::create_dir_all(rego.join("examples/more")).unwrap();
        fs::write(
            rego.join("lib/words.rego"),
            "package mercator.lib.words\nx := 1",
        )
        .unwrap();
        fs::write(
            rego.join("lib/words_test.rego"),
            "package mercator.lib.words_test",
        )
        .unwrap();
        fs::write(
            rego.join("examples/pii.rego"),
            "package mercator.policy.pii",
        )
        .unwrap();
        fs::write(
            rego.join("examples/more/x.rego"),
            "package mercator.policy.x",
        )
        .unwrap();

        let paths: Vec<String> = policy_modules(&rego)
            .unwrap()
            .into_iter()
            .map(|module| module.path)
            .collect();
        let tested: Vec<String> = rego_files(&rego)
            .unwrap()
            .into_iter()
            .map(|file| file.module_path)
            .collect();

        assert_eq!(paths, ["rego/department.rego", "rego/lib/words.rego"]);
        assert!(tested.contains(&"rego/examples/more/x.rego".to_owned()));
        assert!(tested.contains(&"rego/lib/words_test.rego".to_owned()));
    }

    #[test]
    fn an_unknown_field_is_refused_with_the_filters_message() {
        let dir = layout();
        let path = dir.path().join("gateway.yaml");
        let text = fs::read_to_string(&path).unwrap();
        fs::write(&path, text.replace("sink_cluster", "sink_clutser")).unwrap();

        let error = plugin_config(&path).unwrap_err().to_string();

        assert!(error.contains("gateway.yaml"), "{error}");
        assert!(error.contains("sink_clutser"), "{error}");
    }

    #[test]
    fn a_bad_limit_or_forbidden_pattern_is_refused_before_envoy_sees_it() {
        for (extra, field) in [
            (
                "limits:\n  allowed_models: {mistral: [m]}\n",
                "limits.allowed_models.mistral",
            ),
            (
                "forbidden_content:\n  - {name: leak, pattern: \"[unclosed\"}\n",
                "forbidden_content[0].pattern",
            ),
        ] {
            let dir = layout();
            let path = dir.path().join("gateway.yaml");
            let text = fs::read_to_string(&path).unwrap();
            fs::write(&path, format!("{text}{extra}")).unwrap();

            let error = plugin_config(&path).unwrap_err().to_string();

            assert!(error.contains(field), "{field}: {error}");
        }
    }

    #[test]
    fn a_bad_evidence_delivery_setting_is_refused_before_envoy_sees_it() {
        for (setting, named) in [
            ("  when_full: block\n", "block"),
            ("  max_backoff_ms: 0\n", "evidence.max_backoff_ms"),
        ] {
            let dir = layout();
            let path = dir.path().join("gateway.yaml");
            let text = fs::read_to_string(&path).unwrap();
            fs::write(&path, format!("{text}{setting}")).unwrap();

            let error = plugin_config(&path).unwrap_err().to_string();

            assert!(error.contains(named), "{named}: {error}");
        }
    }

    #[test]
    fn a_drop_mode_with_its_backoff_cap_is_accepted() {
        let dir = layout();
        let path = dir.path().join("gateway.yaml");
        let text = fs::read_to_string(&path).unwrap();
        fs::write(
            &path,
            format!("{text}  when_full: drop\n  max_backoff_ms: 500\n"),
        )
        .unwrap();

        let config = plugin_config(&path).unwrap();

        assert!(
            config.json.contains("\"when_full\":\"drop\""),
            "{}",
            config.json
        );
    }

    #[test]
    fn a_bad_hash_in_a_key_file_names_the_file_and_entry() {
        let dir = layout();
        fs::write(
            dir.path().join("keys/more.yaml"),
            "- {sha256: abc, user_id: bob, name: bob-key}\n",
        )
        .unwrap();

        let error = plugin_config(&dir.path().join("gateway.yaml"))
            .unwrap_err()
            .to_string();

        assert!(error.contains("api_keys[1].sha256"), "{error}");
        assert!(error.contains("entry 0 of"), "{error}");
        assert!(error.contains("more.yaml"), "{error}");
    }

    #[test]
    fn an_unknown_field_in_a_key_file_names_the_file() {
        let dir = layout();
        fs::write(
            dir.path().join("keys/more.yaml"),
            "- {sha256: abc, user_id: bob, name: bob-key, departmnet: x}\n",
        )
        .unwrap();

        let error = plugin_config(&dir.path().join("gateway.yaml"))
            .unwrap_err()
            .to_string();

        assert!(error.contains("more.yaml"), "{error}");
        assert!(error.contains("departmnet"), "{error}");
    }

    #[test]
    fn a_field_given_twice_is_refused() {
        let dir = layout();
        let path = dir.path().join("gateway.yaml");
        let text = fs::read_to_string(&path).unwrap();
        fs::write(&path, text + "gateway_id: again\n").unwrap();

        let error = plugin_config(&path).unwrap_err().to_string();

        assert!(error.contains("duplicate entry"), "{error}");
        assert!(error.contains("gateway_id"), "{error}");
    }

    #[test]
    fn a_missing_key_file_suggests_making_the_development_material() {
        let dir = layout();
        fs::remove_file(dir.path().join("keys/more.yaml")).unwrap();

        let error = plugin_config(&dir.path().join("gateway.yaml")).unwrap_err();

        assert!(matches!(error, ToolError::MissingApiKeyFile { .. }));
        assert!(error.to_string().contains("mercator dev-init"), "{error}");
    }

    #[test]
    fn a_policy_that_does_not_compile_is_named() {
        let dir = layout();
        fs::write(dir.path().join("rego/broken.rego"), "package x\nallow if {").unwrap();

        let error = plugin_config(&dir.path().join("gateway.yaml"))
            .unwrap_err()
            .to_string();

        assert!(error.contains("rego/broken.rego:2:"), "{error}");
        assert!(!error.contains('\n'), "{error}");
    }

    #[test]
    fn inline_policies_are_refused_in_favour_of_the_directory() {
        let dir = layout();
        let path = dir.path().join("gateway.yaml");
        let text = fs::read_to_string(&path).unwrap();
        fs::write(
            &path,
            text.replace("policies_dir: rego", "policies: {modules: []}"),
        )
        .unwrap();

        let error = plugin_config(&path).unwrap_err().to_string();

        assert!(error.contains("`policies`"), "{error}");
    }

    #[test]
    fn an_empty_policy_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();

        let error = policy_modules(dir.path()).unwrap_err();

        assert!(matches!(error, ToolError::NoPolicies { .. }));
    }

    #[test]
    fn the_projects_gateway_configuration_reads_with_its_development_keys() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let config = root.join("config/gateway.yaml");
        let text = fs::read_to_string(&config).unwrap();

        // The real file names ../.dev/api-keys.yaml; point a copy at a key file of its own.
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("config")).unwrap();
        fs::create_dir(dir.path().join(".dev")).unwrap();
        let copy = dir.path().join("config/gateway.yaml");
        fs::write(
            &copy,
            text.replace("../policies", &root.join("policies").to_string_lossy()),
        )
        .unwrap();
        fs::write(
            dir.path().join(".dev/api-keys.yaml"),
            format!(
                "- {{sha256: {}, user_id: u, name: n}}\n",
                api_key_sha256("k")
            ),
        )
        .unwrap();

        let made = plugin_config(&copy).unwrap();

        let json: Value = serde_json::from_str(&made.json).unwrap();
        assert_eq!(json["gateway_id"], "mercator-dev");
        assert_eq!(
            json["policies"]["modules"][0]["path"],
            "policies/department.rego"
        );
        assert_eq!(json["api_keys"].as_array().unwrap().len(), 1);
        assert_eq!(json["limits"]["max_tokens"], 16384);
        assert_eq!(json["forbidden_content"][0]["name"], "aws-access-key-id");
    }
}

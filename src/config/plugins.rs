//! External plugin declarations from `plugins.json`.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use super::error::Problems;

/// How an external plugin is reached.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Driver {
    Http {
        url: String,
    },
    Unix {
        path: String,
    },
    Command {
        program: String,
        #[serde(default)]
        args: Vec<String>,
        #[serde(default)]
        env: BTreeMap<String, String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ParamDecl {
    pub name: String,
    pub required: bool,
}

/// One declared external plugin.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ExternalPlugin {
    pub name: String,
    pub role: String,
    pub driver: Driver,
    #[serde(default)]
    pub params: Vec<ParamDecl>,
    #[serde(default)]
    pub output: Vec<String>,
}

impl ExternalPlugin {
    /// Declared branches; an empty list means `success` and `failure`.
    pub fn branches(&self) -> Vec<String> {
        if self.output.is_empty() {
            vec!["success".into(), "failure".into()]
        } else {
            self.output.clone()
        }
    }
}

pub type ExternalPlugins = BTreeMap<String, Arc<ExternalPlugin>>;

/// Parses `plugins.json`. Built-in names and malformed entries are reported and skipped.
pub fn parse(doc: &Value, problems: &mut Problems) -> ExternalPlugins {
    let mut out = ExternalPlugins::new();
    let Some(map) = doc.as_object() else {
        problems.error("", "expected a JSON object of plugin declarations");
        return out;
    };
    for (name, decl) in map {
        match serde_json::from_value::<ExternalPlugin>(decl.clone()) {
            Ok(p) if crate::flow::catalogue::builtin(name).is_some() => {
                problems.error(name, format!("`{}` is a built-in plugin name", p.name));
            }
            Ok(p) if p.role != "middleware" => {
                problems.error(
                    &format!("{name}.role"),
                    "external plugins can only be middleware",
                );
            }
            Ok(p) => {
                out.insert(name.clone(), Arc::new(p));
            }
            Err(e) => problems.error(name, e.to_string()),
        }
    }
    out
}

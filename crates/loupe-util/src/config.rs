//! One way to read a command's TOML config: the user's file, with `--set key=value` overrides on
//! top (the value in TOML syntax, a bare word taken as a string; a dotted key such as
//! `exact.max_k=2` reaches into a section), deserialized into the command's config struct. An
//! error quotes the user's own file and line, or names the override at fault.

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::{Error, Result};

/// Reads `path` (or, with `None`, an empty config) and applies `overrides`.
pub fn load<T: DeserializeOwned>(path: Option<&Path>, overrides: &[String]) -> Result<T> {
    let (text, origin) = match path {
        Some(path) => (
            std::fs::read_to_string(path).map_err(|e| Error::io(path, "cannot read the config", e))?,
            path.display().to_string(),
        ),
        None => (String::new(), "the command line".to_string()),
    };
    parse(&text, &origin, overrides)
}

/// Parses config `text` (named `origin` in errors) with `overrides` applied.
pub fn parse<T: DeserializeOwned>(text: &str, origin: &str, overrides: &[String]) -> Result<T> {
    let config_error = |message: String| Error::Config {
        origin: origin.to_string(),
        message,
    };
    // Deserializing the user's own text makes toml's error quote their line.
    let own = toml::from_str::<T>(text);
    if overrides.is_empty() {
        return own.map_err(|e| config_error(format!("{}\n{e}", hint(e.message()))));
    }
    let mut table: toml::Table =
        toml::from_str(text).map_err(|e| config_error(format!("not valid TOML:\n{e}")))?;
    let mut keys = Vec::new();
    for item in overrides {
        keys.push(apply_override(&mut table, item).map_err(|message| Error::Config {
            origin: format!("--set {item}"),
            message,
        })?);
    }
    match toml::Value::Table(table).try_into::<T>() {
        Ok(config) => Ok(config),
        Err(merged) => match own {
            // The file alone is wrong, in a field no override replaces: quote the file's line.
            Err(e) if !keys.iter().any(|k| e.message().contains(&format!("`{k}`"))) => {
                Err(config_error(format!("{}\n{e}", hint(e.message()))))
            }
            _ => Err(Error::Config {
                origin: format!("{origin} with --set {}", overrides.join(" --set ")),
                message: format!("{}: {}", hint(merged.message()), merged.message()),
            }),
        },
    }
}

/// Deserializes `table`, a config a program assembled (say, from a file's shared settings and
/// one run's own), so there is no text of the user's to quote: an error gives the hint and
/// toml's message under `origin`.
pub fn from_table<T: DeserializeOwned>(table: toml::Table, origin: &str) -> Result<T> {
    toml::Value::Table(table)
        .try_into::<T>()
        .map_err(|e| Error::Config {
            origin: origin.to_string(),
            message: format!("{}: {}", hint(e.message()), e.message()),
        })
}

/// Adds to an "unknown field" error which kinds the field belongs to, from `owners` (field,
/// kinds): a field written for another variant of a tagged config is then named as such.
pub fn name_owner(error: Error, owners: &[(&str, &str)]) -> Error {
    let Error::Config { origin, message } = error else {
        return error;
    };
    let owner = owners
        .iter()
        .find(|(field, _)| message.contains(&format!("unknown field `{field}`")));
    match owner {
        Some((field, kinds)) => Error::Config {
            origin,
            message: format!("{message}\n`{field}` belongs to kind {kinds}"),
        },
        None => Error::Config { origin, message },
    }
}

/// Sets `key=value` in `table`; returns the key's last part (the field it sets).
fn apply_override(table: &mut toml::Table, item: &str) -> std::result::Result<String, String> {
    let (key, value) = item
        .split_once('=')
        .ok_or("an override is written field=value, for example lr=1e-3 or exact.max_k=2")?;
    let value = value.trim();
    let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    let key = key.trim().replace('-', "_");
    let mut path: Vec<&str> = key.split('.').collect();
    let last = path
        .pop()
        .filter(|k| !k.is_empty())
        .ok_or("the field name is empty")?;
    let mut section = table;
    for part in path {
        section = section
            .entry(part)
            .or_insert_with(|| toml::Value::Table(Default::default()))
            .as_table_mut()
            .ok_or_else(|| format!("'{part}' is not a section"))?;
    }
    section.insert(last.to_string(), parsed);
    Ok(last.to_string())
}

/// One line saying what kind of fix a deserialization error asks for.
fn hint(message: &str) -> &'static str {
    if message.contains("missing field") {
        "a required field is missing"
    } else if message.contains("unknown field") {
        "a field is not known (misspelled, or it belongs to another kind)"
    } else if message.contains("unknown variant") {
        "a value is not one of those allowed"
    } else {
        "a field has the wrong type (numbers unquoted, names and paths in quotes)"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Config {
        name: String,
        k: usize,
        #[serde(default)]
        inner: Inner,
    }

    #[derive(Debug, Default, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        #[serde(default)]
        max_k: usize,
    }

    #[test]
    fn overrides_apply_with_dotted_keys_and_bare_words() {
        let c: Config = parse(
            "name = \"a\"\nk = 1\n",
            "x.toml",
            &["k=4".into(), "inner.max_k=2".into(), "name=b".into()],
        )
        .unwrap();
        assert_eq!(
            c,
            Config {
                name: "b".into(),
                k: 4,
                inner: Inner { max_k: 2 }
            }
        );
    }

    #[test]
    fn errors_quote_the_users_line_or_name_the_override() {
        let text = "# a comment\nname = \"a\"\nk = \"four\"\n";
        let e = parse::<Config>(text, "x.toml", &[]).unwrap_err().to_string();
        assert!(
            e.contains("x.toml") && e.contains("3 | k = \"four\"") && e.contains("wrong type"),
            "{e}"
        );
        // The same line is quoted when an override sets something else.
        let e = parse::<Config>(text, "x.toml", &["name=b".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("3 | k = \"four\""), "{e}");
        // An override that fixes the file's error is fine; one that breaks it is named.
        parse::<Config>(text, "x.toml", &["k=4".into()]).unwrap();
        let e = parse::<Config>("name = \"a\"\nk = 1\n", "x.toml", &["k=many".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--set k=many") && e.contains("wrong type"), "{e}");
        let e = parse::<Config>("name = \"a\"\nk = 1\nkk = 2\n", "x.toml", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("kk") && e.contains("not known"), "{e}");
        let e = parse::<Config>("", "x.toml", &["k".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("field=value"), "{e}");
    }
}

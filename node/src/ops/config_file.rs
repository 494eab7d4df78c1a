//! `strata serve --config FILE`: a TOML file of serve options.
//!
//! The file is read before the command line is parsed, and each of its settings becomes the
//! option's environment variable unless that variable is already set; clap then applies its
//! usual order (command line, environment, default). So the file never overrides a flag or a
//! variable, and every option is validated by the same parser whatever its source.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::CommandFactory;

use crate::ops::config::Cli;

/// The --config value (or `STRATA_CONFIG`) of a `serve` command line, if any.
fn config_path(args: &[String]) -> Option<PathBuf> {
    if args.get(1).map(String::as_str) != Some("serve") {
        return None;
    }
    let mut it = args.iter().skip(2);
    while let Some(a) = it.next() {
        if a == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = a.strip_prefix("--config=") {
            return Some(PathBuf::from(v));
        }
    }
    std::env::var_os("STRATA_CONFIG").map(PathBuf::from)
}

fn toml_to_env_value(key: &str, v: &toml::Value) -> Result<String> {
    Ok(match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Array(items) => items
            .iter()
            .map(|i| match i {
                toml::Value::String(s) => Ok(s.clone()),
                toml::Value::Integer(n) => Ok(n.to_string()),
                _ => bail!("{key}: array items must be strings or integers"),
            })
            .collect::<Result<Vec<_>>>()?
            .join(","),
        _ => bail!("{key}: expected a string, integer, boolean or array"),
    })
}

/// Reads the config file of a `serve` command line, if one is given, into the environment.
/// Call before parsing the command line and before any thread starts.
pub fn apply(args: &[String]) -> Result<()> {
    let Some(path) = config_path(args) else {
        return Ok(());
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading the config file {}", path.display()))?;
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let cli = Cli::command();
    let serve = cli
        .find_subcommand("serve")
        .context("the serve command is missing")?;
    for (key, value) in &table {
        let long = key.replace('_', "-");
        let Some(arg) = serve
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()) && long != "config")
        else {
            bail!("{}: unknown option {key:?}", path.display());
        };
        let Some(env) = arg.get_env() else {
            bail!(
                "{}: option {key:?} cannot be set from a file",
                path.display()
            );
        };
        if std::env::var_os(env).is_none() {
            let v = toml_to_env_value(key, value).with_context(|| path.display().to_string())?;
            std::env::set_var(env, v);
        }
    }
    Ok(())
}

//! A small row builder for the report's tables: every row names its columns and types, the table
//! checks that all rows agree, and turns them into a polars `DataFrame` written as Parquet and CSV.
//! Building rows by name keeps the wide `cells` table (a block of value, interval and counts per
//! metric) readable and makes a misplaced column impossible.

use std::fs::File;
use std::path::Path;

use anyhow::{bail, Context, Result};
use metrics::Measured;
use polars::prelude::{
    Column, CsvReadOptions, CsvWriter, DataFrame, ParquetReader, ParquetWriter, SerReader,
    SerWriter,
};

/// One value of a row; `None` is a null in the table.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(Option<String>),
    F64(Option<f64>),
    U64(Option<u64>),
    Bool(Option<bool>),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Str(_) => "string",
            Value::F64(_) => "f64",
            Value::U64(_) => "u64",
            Value::Bool(_) => "bool",
        }
    }
}

/// A count's column suffix and where it comes from.
type CountColumn = (&'static str, fn(&metrics::Counts) -> usize);

/// One row: column names and values, in column order.
#[derive(Debug, Clone, Default)]
pub struct Row {
    values: Vec<(String, Value)>,
}

impl Row {
    pub fn str(&mut self, name: &str, value: impl Into<String>) -> &mut Self {
        self.push(name, Value::Str(Some(value.into())))
    }

    pub fn opt_str(&mut self, name: &str, value: Option<impl Into<String>>) -> &mut Self {
        self.push(name, Value::Str(value.map(Into::into)))
    }

    pub fn f64(&mut self, name: &str, value: Option<f64>) -> &mut Self {
        self.push(name, Value::F64(value))
    }

    pub fn u64(&mut self, name: &str, value: Option<u64>) -> &mut Self {
        self.push(name, Value::U64(value))
    }

    pub fn count(&mut self, name: &str, value: usize) -> &mut Self {
        self.push(name, Value::U64(Some(value as u64)))
    }

    pub fn bool(&mut self, name: &str, value: Option<bool>) -> &mut Self {
        self.push(name, Value::Bool(value))
    }

    /// A metric as `{prefix}`, `{prefix}_ci_low`, `{prefix}_ci_high` and its counts
    /// (`{prefix}_prompts`, `_prompts_used`, `_prompts_excluded`, `_samples`, `_scored`,
    /// `_failed`, `_dropped`, `_empty`); all null when the metric is absent.
    pub fn measured(&mut self, prefix: &str, m: Option<&Measured>) -> &mut Self {
        self.f64(prefix, m.and_then(|m| m.value));
        let ci = m.and_then(|m| m.ci95);
        self.f64(&format!("{prefix}_ci_low"), ci.map(|c| c.0));
        self.f64(&format!("{prefix}_ci_high"), ci.map(|c| c.1));
        let c = m.map(|m| m.counts);
        let counts: [CountColumn; 8] = [
            ("prompts", |c| c.prompts),
            ("prompts_used", |c| c.prompts_used),
            ("prompts_excluded", |c| c.prompts_excluded),
            ("samples", |c| c.samples),
            ("scored", |c| c.scored),
            ("failed", |c| c.failed),
            ("dropped", |c| c.dropped),
            ("empty", |c| c.empty),
        ];
        for (name, get) in counts {
            self.u64(
                &format!("{prefix}_{name}"),
                c.as_ref().map(|c| get(c) as u64),
            );
        }
        self
    }

    fn push(&mut self, name: &str, value: Value) -> &mut Self {
        self.values.push((name.to_owned(), value));
        self
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.values.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

/// Rows with the same columns, in order.
#[derive(Debug, Clone)]
pub struct Table {
    pub name: &'static str,
    pub rows: Vec<Row>,
}

impl Table {
    pub fn new(name: &'static str, rows: Vec<Row>) -> Self {
        Self { name, rows }
    }

    /// The table as a DataFrame. Every row must have the first row's columns with the same types
    /// (a programming error otherwise, reported with the column). No rows: no columns.
    pub fn to_dataframe(&self) -> Result<DataFrame> {
        let Some(first) = self.rows.first() else {
            return Ok(DataFrame::empty());
        };
        for (i, row) in self.rows.iter().enumerate() {
            if row.values.len() != first.values.len() {
                bail!(
                    "table {}: row {i} has {} columns, the first row {}",
                    self.name,
                    row.values.len(),
                    first.values.len()
                );
            }
            for ((name, value), (first_name, first_value)) in row.values.iter().zip(&first.values) {
                if name != first_name || value.kind() != first_value.kind() {
                    bail!(
                        "table {}: row {i} has column {name:?} ({}) where the first row has {first_name:?} ({})",
                        self.name,
                        value.kind(),
                        first_value.kind()
                    );
                }
            }
        }
        let columns: Vec<Column> = first
            .values
            .iter()
            .enumerate()
            .map(|(j, (name, value))| {
                let name = name.as_str().into();
                let cells = self.rows.iter().map(|r| &r.values[j].1);
                match value {
                    Value::Str(_) => Column::new(
                        name,
                        cells
                            .map(|v| match v {
                                Value::Str(s) => s.clone(),
                                _ => unreachable!("types checked above"),
                            })
                            .collect::<Vec<Option<String>>>(),
                    ),
                    Value::F64(_) => Column::new(
                        name,
                        cells
                            .map(|v| match v {
                                Value::F64(x) => *x,
                                _ => unreachable!("types checked above"),
                            })
                            .collect::<Vec<Option<f64>>>(),
                    ),
                    Value::U64(_) => Column::new(
                        name,
                        cells
                            .map(|v| match v {
                                Value::U64(x) => *x,
                                _ => unreachable!("types checked above"),
                            })
                            .collect::<Vec<Option<u64>>>(),
                    ),
                    Value::Bool(_) => Column::new(
                        name,
                        cells
                            .map(|v| match v {
                                Value::Bool(x) => *x,
                                _ => unreachable!("types checked above"),
                            })
                            .collect::<Vec<Option<bool>>>(),
                    ),
                }
            })
            .collect();
        DataFrame::new(self.rows.len(), columns)
            .with_context(|| format!("table {}: cannot build the DataFrame", self.name))
    }
}

pub fn write_parquet(df: &mut DataFrame, path: &Path) -> Result<()> {
    let file = File::create(path).with_context(|| format!("{}: cannot create", path.display()))?;
    ParquetWriter::new(file)
        .finish(df)
        .with_context(|| format!("{}: cannot write Parquet", path.display()))?;
    Ok(())
}

pub fn write_csv(df: &mut DataFrame, path: &Path) -> Result<()> {
    let mut file =
        File::create(path).with_context(|| format!("{}: cannot create", path.display()))?;
    CsvWriter::new(&mut file)
        .include_header(true)
        .finish(df)
        .with_context(|| format!("{}: cannot write CSV", path.display()))?;
    Ok(())
}

/// Reads a table written by [`write_parquet`] (for tests and for tools that join reports).
pub fn read_parquet(path: &Path) -> Result<DataFrame> {
    let file = File::open(path).with_context(|| format!("{}: cannot read", path.display()))?;
    ParquetReader::new(file)
        .finish()
        .with_context(|| format!("{}: not a readable Parquet file", path.display()))
}

/// Reads a table written by [`write_csv`]; column types are inferred from the text.
pub fn read_csv(path: &Path) -> Result<DataFrame> {
    CsvReadOptions::default()
        .with_has_header(true)
        .try_into_reader_with_file_path(Some(path.to_path_buf()))
        .and_then(|reader| reader.finish())
        .with_context(|| format!("{}: not a readable CSV file", path.display()))
}

//! `hookmesh dlq list|show|replay`: the dead-letter stream for operators.
//! `nats/README.md` gives the same with the `nats` CLI.

use hookmesh_runtime::dead_letter::{self, StoredDeadLetter};

use crate::AnyError;
use crate::broker::ChosenBroker;
use crate::cli::{CommonArgs, DlqAction, DlqArgs};

fn one_line(text: &str, width: usize) -> String {
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if line.chars().count() > width {
        let cut: String = line.chars().take(width.saturating_sub(1)).collect();
        format!("{cut}…")
    } else {
        line
    }
}

fn print_table(letters: &[StoredDeadLetter]) {
    println!(
        "{:>8}  {:<20}  {:<36}  {:<26}  {:>5}  ERROR",
        "SEQ", "DEAD-LETTERED", "ORIGINAL SUBJECT", "CONSUMER", "TRIES"
    );
    for letter in letters {
        let time = letter.time.to_rfc3339();
        println!(
            "{:>8}  {:<20}  {:<36}  {:<26}  {:>5}  {}",
            letter.sequence,
            time.get(..19).unwrap_or(&time),
            one_line(&letter.subject, 36),
            one_line(&format!("{}/{}", letter.stream, letter.consumer), 26),
            letter.deliveries,
            one_line(&letter.error, 120)
        );
    }
}

fn print_letter(letter: &StoredDeadLetter) {
    println!("sequence: {}", letter.sequence);
    println!("dead-lettered: {}", letter.time.to_rfc3339());
    println!("original subject: {}", letter.subject);
    println!(
        "from: stream {} sequence {}, consumer {}, after {} deliveries",
        letter.stream, letter.original_sequence, letter.consumer, letter.deliveries
    );
    println!("error: {}", letter.error);
    println!("headers:");
    for (name, values) in letter.headers.iter() {
        for value in values {
            println!("  {}: {}", name.as_ref() as &str, value.as_str());
        }
    }
    println!("payload ({} bytes):", letter.payload.len());
    match serde_json::from_slice::<serde_json::Value>(&letter.payload) {
        Ok(json) => println!(
            "{}",
            serde_json::to_string_pretty(&json).unwrap_or_default()
        ),
        Err(_) => println!("{}", String::from_utf8_lossy(&letter.payload)),
    }
}

pub async fn run(args: DlqArgs, common: CommonArgs) -> Result<(), AnyError> {
    let broker = ChosenBroker::choose(&common, &args.data_dir);
    let client = broker.connect("hookmesh-dlq").await?;
    let js = async_nats::jetstream::new(client.clone());
    act(&js, args.action).await.map_err(|e| broker.explain(e))?;
    client.flush().await?;
    Ok(())
}

async fn act(js: &async_nats::jetstream::Context, action: DlqAction) -> Result<(), AnyError> {
    match action {
        DlqAction::List {
            subject,
            limit,
            json,
        } => {
            let letters = dead_letter::list(js, subject.as_deref(), limit).await?;
            if json {
                for letter in &letters {
                    println!("{}", serde_json::to_string(letter)?);
                }
            } else if letters.is_empty() {
                println!(
                    "No dead letters{}.",
                    subject.map(|s| format!(" for {s}")).unwrap_or_default()
                );
            } else {
                print_table(&letters);
            }
        }
        DlqAction::Show { sequence } => {
            print_letter(&dead_letter::get(js, sequence).await?);
        }
        DlqAction::Replay {
            sequences,
            all,
            subject,
            keep,
        } => {
            let letters = if all {
                dead_letter::list(js, subject.as_deref(), usize::MAX).await?
            } else if sequences.is_empty() {
                return Err("name the sequences to replay, or pass --all".into());
            } else {
                let mut letters = Vec::with_capacity(sequences.len());
                for sequence in sequences {
                    letters.push(dead_letter::get(js, sequence).await?);
                }
                letters
            };
            let mut failed = 0;
            for letter in &letters {
                match dead_letter::replay(js, letter, keep).await {
                    Ok(sequence) => println!(
                        "replayed dead letter {} to {} (stream sequence {sequence}){}",
                        letter.sequence,
                        letter.subject,
                        if keep { ", kept" } else { "" }
                    ),
                    Err(error) => {
                        failed += 1;
                        eprintln!("hookmesh: dead letter {}: {error}", letter.sequence);
                    }
                }
            }
            println!("{} replayed, {failed} failed.", letters.len() - failed);
            if failed > 0 {
                return Err(format!("{failed} dead letters could not be replayed").into());
            }
        }
    }
    Ok(())
}

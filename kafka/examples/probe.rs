use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use std::time::{Duration, Instant};
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (b, topic, part, start) = (
        &args[1],
        &args[2],
        args[3].parse::<i32>().unwrap(),
        &args[4],
    );
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", b)
        .set("group.id", "probe")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true");
    if let Ok(v) = std::env::var("EXTRA") {
        let (k, val) = v.split_once("=").unwrap();
        c.set(k, val);
    }
    if let Ok(d) = std::env::var("DBG") {
        c.set("debug", d);
    }
    let r: BaseConsumer = c.create().unwrap();
    let mut tpl = TopicPartitionList::new();
    let off = if start == "b" {
        Offset::Beginning
    } else {
        Offset::Offset(start.parse().unwrap())
    };
    tpl.add_partition_offset(topic, part, off).unwrap();
    r.assign(&tpl).unwrap();
    let t = Instant::now();
    let mut n = 0;
    while t.elapsed() < Duration::from_secs(10) {
        match r.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                n += 1;
                if n == 1 {
                    println!("first {} at {:?}", m.offset(), t.elapsed());
                }
            }
            Some(Err(e)) => {
                println!("err {e} at {:?} n={n}", t.elapsed());
                break;
            }
            None => {}
        }
    }
    println!("n={n} {:?}", t.elapsed());
}

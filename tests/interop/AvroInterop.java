// An independent Java client: Apache Kafka's kafka-clients and Apache Avro,
// knowing nothing of autotrain but the published .avsc files. Run as a
// single-file program on the classpath `scripts/kafka classpath` prints:
//
//   java -cp CP AvroInterop.java produce BOOTSTRAP TOPIC SCHEMA_DIR
//       writes three bars; prints them as JSON lines
//   java -cp CP AvroInterop.java consume BOOTSTRAP TOPIC SCHEMA_DIR N
//       reads N records (read_committed), prints each decoded as JSON with
//       its event id header as "_event_id"
//
// Records use Avro single-object encoding (C3 01, the schema's CRC-64-AVRO
// fingerprint little-endian, the binary datum): BinaryMessageEncoder and
// BinaryMessageDecoder implement exactly that.

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;

import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.message.BinaryMessageDecoder;
import org.apache.avro.message.BinaryMessageEncoder;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class AvroInterop {
    static Schema bar(String dir) throws Exception {
        return new Schema.Parser().parse(Files.readString(Path.of(dir, "bar.avsc")));
    }

    public static void main(String[] args) throws Exception {
        if (args.length < 4) {
            System.err.println("usage: AvroInterop produce|consume BOOTSTRAP TOPIC SCHEMA_DIR [N]");
            System.exit(2);
        }
        String bootstrap = args[1], topic = args[2];
        Schema schema = bar(args[3]);
        if (args[0].equals("produce")) {
            produce(bootstrap, topic, schema);
        } else {
            consume(bootstrap, topic, schema, Integer.parseInt(args[4]));
        }
    }

    static void produce(String bootstrap, String topic, Schema schema) throws Exception {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("acks", "all");
        BinaryMessageEncoder<GenericRecord> encoder =
                new BinaryMessageEncoder<>(GenericData.get(), schema);
        try (KafkaProducer<byte[], byte[]> producer =
                new KafkaProducer<>(p, new ByteArraySerializer(), new ByteArraySerializer())) {
            for (int i = 0; i < 3; i++) {
                GenericRecord bar = new GenericData.Record(schema);
                bar.put("exchange", "javaexchange");
                bar.put("symbol", "JVUSD");
                bar.put("timeframe", "1h");
                bar.put("ts", 1_700_000_000_000L + i * 3_600_000L);
                bar.put("open", 10.5 + i);
                bar.put("high", 12.25 + i);
                bar.put("low", 9.0 + i);
                bar.put("close", 11.0 + i);
                bar.put("volume", 4321.5);
                bar.put("source", "java-avro");
                bar.put("checksum", null);
                bar.put("revision", 0);
                byte[] value = encoder.encode(bar).array();
                producer.send(new ProducerRecord<>(topic,
                        "javaexchange:JVUSD".getBytes(StandardCharsets.UTF_8), value)).get();
                System.out.println(GenericData.get().toString(bar));
            }
        }
    }

    static void consume(String bootstrap, String topic, Schema schema, int n) throws Exception {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("group.id", "java-interop-" + System.nanoTime());
        p.put("auto.offset.reset", "earliest");
        p.put("isolation.level", "read_committed");
        BinaryMessageDecoder<GenericRecord> decoder =
                new BinaryMessageDecoder<>(GenericData.get(), schema);
        List<String> out = new ArrayList<>();
        try (KafkaConsumer<byte[], byte[]> consumer =
                new KafkaConsumer<>(p, new ByteArrayDeserializer(), new ByteArrayDeserializer())) {
            consumer.subscribe(List.of(topic));
            long deadline = System.currentTimeMillis() + 60_000;
            while (out.size() < n && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(200))) {
                    GenericRecord bar = decoder.decode(r.value());
                    Header id = r.headers().lastHeader("event_id");
                    String json = GenericData.get().toString(bar);
                    String eventId = id == null ? "" : new String(id.value(), StandardCharsets.UTF_8);
                    out.add(json.substring(0, json.length() - 1)
                            + ", \"_event_id\": \"" + eventId + "\"}");
                }
            }
        }
        if (out.size() < n) {
            System.err.println("read " + out.size() + " of " + n + " records");
            System.exit(1);
        }
        out.forEach(System.out::println);
    }
}

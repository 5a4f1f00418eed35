// An ordinary SQS producer and consumer (AWS SDK for JavaScript v3), nothing PerfectQueue-specific
// but the endpoint. Usage:
//   node sqs.js <endpoint> <queue> produce <count>   send <count> messages in batches of 10
//   node sqs.js <endpoint> <queue> consume <count>   receive and delete until <count> messages came
// Credentials come from the usual AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY variables; a service
// without keys (loopback only) serves requests signed with any.
import {
  DeleteMessageBatchCommand,
  GetQueueUrlCommand,
  ReceiveMessageCommand,
  SendMessageBatchCommand,
  SQSClient,
} from "@aws-sdk/client-sqs";

const [endpoint, queueName, mode, countText] = process.argv.slice(2);
const count = Number(countText ?? "10");
const sqs = new SQSClient({
  endpoint,
  region: process.env.AWS_REGION ?? "us-east-1",
  credentials: {
    accessKeyId: process.env.AWS_ACCESS_KEY_ID ?? "local",
    secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY ?? "local",
  },
});

const { QueueUrl } = await sqs.send(new GetQueueUrlCommand({ QueueName: queueName }));

async function produce() {
  for (let start = 0; start < count; start += 10) {
    const Entries = [];
    for (let i = start; i < Math.min(start + 10, count); i++) {
      Entries.push({
        Id: `m${i}`,
        MessageBody: `message ${i} ✓`,
        MessageAttributes: { index: { DataType: "Number", StringValue: String(i) } },
      });
    }
    const { Failed } = await sqs.send(new SendMessageBatchCommand({ QueueUrl, Entries }));
    if (Failed?.length) throw new Error(`send failed: ${JSON.stringify(Failed)}`);
  }
  console.log(`sent ${count} messages`);
}

async function consume() {
  const seen = new Set();
  while (seen.size < count) {
    const { Messages = [] } = await sqs.send(
      new ReceiveMessageCommand({
        QueueUrl,
        MaxNumberOfMessages: 10,
        WaitTimeSeconds: 5,
        MessageAttributeNames: ["All"],
        MessageSystemAttributeNames: ["All"],
      }),
    );
    if (Messages.length === 0) throw new Error(`only ${seen.size} of ${count} messages came`);
    for (const message of Messages) {
      seen.add(message.MessageId);
      console.log(`body: ${message.Body}`);
    }
    const Entries = Messages.map((m, i) => ({ Id: String(i), ReceiptHandle: m.ReceiptHandle }));
    const { Failed } = await sqs.send(new DeleteMessageBatchCommand({ QueueUrl, Entries }));
    if (Failed?.length) throw new Error(`delete failed: ${JSON.stringify(Failed)}`);
  }
  console.log(`received and deleted ${seen.size} messages`);
}

await (mode === "produce" ? produce() : consume());

// The seed's (000) JavaScript EventSource client, as written there; only the base URL, the sandbox id and
// the key come from the environment (the seed got them from @hopx-ai/sdk), and it stops after 3 messages.
import EventSource from 'eventsource';

const apiKey = process.env.API_KEY;
const baseUrl = process.env.BASE_URL;
const sandboxId = process.env.SANDBOX_ID;

const streamUrl = `${baseUrl}/v1/sandboxes/${sandboxId}/metrics/stream?token=${apiKey}`;

const eventSource = new EventSource(streamUrl);
let seen = 0;

eventSource.onmessage = (event) => {
  const data = JSON.parse(event.data);
  console.log(`Uptime: ${data.uptime_seconds || 0}s`);
  console.log(`Total Executions: ${data.total_executions || 0}`);
  console.log(`Active Executions: ${data.active_executions || 0}`);
  console.log(`Error Count: ${data.error_count || 0}`);
  console.log(`ID: ${event.lastEventId}`);
  if (++seen >= 3) { eventSource.close(); process.exit(0); }
};

eventSource.onerror = (error) => {
  console.error('SSE error:', error);
  eventSource.close();
  process.exit(1);
};

setTimeout(() => { eventSource.close(); process.exit(2); }, 30000);

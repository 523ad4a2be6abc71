// The verification function printed in E2B's monitoring docs, verbatim apart from the TypeScript
// parameter annotations, which node cannot run. Reads {"secret","payload","sig"} on stdin, prints true/false.
const crypto = require('crypto');

function verifyWebhookSignature(secret, payload, payloadSignature) {
    const expectedSignatureRaw = crypto.createHash('sha256').update(secret + payload).digest('base64');
    const expectedSignature = expectedSignatureRaw.replace(/=+$/, '');
    return  expectedSignature == payloadSignature
}

const a = JSON.parse(require('fs').readFileSync(0, 'utf8'));
process.stdout.write(String(verifyWebhookSignature(a.secret, a.payload, a.sig)));

// A machine-learning client that talks the way Immich's server does, for the /predict contract test.
//
// Immich's server (server/src/repositories/machine-learning.repository.ts) builds a FormData with
// `entries` (the request as a JSON string) and either `image` (the file's bytes as a Blob) or
// `text`, POSTs it to <url>/predict with Node's own fetch, and reads the JSON answer: faces with
// `boundingBox`, `embedding` (a string it hands to Postgres as a vector) and `score`, beside
// `imageHeight` and `imageWidth`; `clip` as an embedding string; `ocr` as parallel arrays with 8
// box numbers per line. This script does the same with Node's FormData, Blob and fetch, and prints
// what Immich's services would take from each answer, as JSON.
//
//   node immich_ml_client.mjs URL faces IMAGE MODEL MIN_SCORE
//   node immich_ml_client.mjs URL clip-image IMAGE MODEL
//   node immich_ml_client.mjs URL clip-text TEXT MODEL [LANGUAGE]
//   node immich_ml_client.mjs URL ocr IMAGE MODEL MIN_DETECTION MIN_RECOGNITION MAX_RESOLUTION
import { readFile } from 'node:fs/promises';

const [url, command, ...args] = process.argv.slice(2);

async function predict(payload, request) {
  const form = new FormData();
  form.append('entries', JSON.stringify(request));
  if (payload.imagePath !== undefined) {
    const bytes = await readFile(payload.imagePath);
    form.append('image', new Blob([new Uint8Array(bytes)]));
  } else {
    form.append('text', payload.text);
  }
  const response = await fetch(new URL('/predict', url), { method: 'POST', body: form });
  if (!response.ok) {
    throw new Error(`/predict answered ${response.status}: ${await response.text()}`);
  }
  return response.json();
}

function vector(text) {
  // Immich stores the string as is; it must be a JSON array of numbers for Postgres to take it.
  const parsed = JSON.parse(text);
  if (!Array.isArray(parsed) || !parsed.every((x) => typeof x === 'number')) {
    throw new Error(`not an embedding: ${text.slice(0, 80)}`);
  }
  return parsed;
}

async function faces(imagePath, modelName, minScore) {
  const request = {
    'facial-recognition': {
      detection: { modelName, options: { minScore: Number(minScore) } },
      recognition: { modelName },
    },
  };
  const response = await predict({ imagePath }, request);
  const { imageHeight, imageWidth } = response;
  // What the face service stores per face: the box in the image's pixels, its size, the embedding.
  return response['facial-recognition'].map((face) => ({
    imageHeight,
    imageWidth,
    boundingBoxX1: face.boundingBox.x1,
    boundingBoxY1: face.boundingBox.y1,
    boundingBoxX2: face.boundingBox.x2,
    boundingBoxY2: face.boundingBox.y2,
    integerBox: [face.boundingBox.x1, face.boundingBox.y1, face.boundingBox.x2, face.boundingBox.y2].every(
      Number.isInteger,
    ),
    score: face.score,
    embeddingIsString: typeof face.embedding === 'string',
    embedding: vector(face.embedding),
  }));
}

async function clipImage(imagePath, modelName) {
  const response = await predict({ imagePath }, { clip: { visual: { modelName } } });
  return { isString: typeof response.clip === 'string', embedding: vector(response.clip) };
}

async function clipText(text, modelName, language) {
  const response = await predict({ text }, { clip: { textual: { modelName, options: { language } } } });
  return { isString: typeof response.clip === 'string', embedding: vector(response.clip) };
}

async function ocr(imagePath, modelName, minDetectionScore, minRecognitionScore, maxResolution) {
  const request = {
    ocr: {
      detection: { modelName, options: { minScore: Number(minDetectionScore), maxResolution: Number(maxResolution) } },
      recognition: { modelName, options: { minScore: Number(minRecognitionScore) } },
    },
  };
  const { box, boxScore, text, textScore } = (await predict({ imagePath }, request)).ocr;
  // One row per line, as the OCR service stores them: eight box numbers at offset 8 * i.
  return text.map((line, i) => ({
    text: line,
    corners: box.slice(8 * i, 8 * i + 8),
    boxScore: boxScore[i],
    textScore: textScore[i],
  }));
}

const commands = { faces, 'clip-image': clipImage, 'clip-text': clipText, ocr };
try {
  process.stdout.write(JSON.stringify(await commands[command](...args)));
} catch (error) {
  process.stderr.write(`${error.message}\n`);
  process.exit(1);
}
